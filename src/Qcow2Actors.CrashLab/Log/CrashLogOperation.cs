namespace Qcow2Actors.CrashLab;

/// <summary>An operation of the recording joined with its completion: what was issued, where it sits in the log,
/// and whether (and where) the image finished it.</summary>
/// <param name="Id">Id the writer gave it (1, 2, 3, ... across all kinds).</param>
/// <param name="Kind">Write, WriteZeroes, Trim or Flush.</param>
/// <param name="Offset">Guest offset (0 for a flush).</param>
/// <param name="Length">Length in bytes (0 for a flush).</param>
/// <param name="Data">A WRITE's bytes (empty otherwise).</param>
/// <param name="Fua">The request carried FUA.</param>
/// <param name="MayUnmap">A WRITE_ZEROES allowed unmapping.</param>
/// <param name="BeginIndex">Index of its begin record in the log.</param>
/// <param name="CompleteIndex">Index of its completion record, or null when the log ends before it completed.</param>
/// <param name="Ok">True/false when completed successfully/with an error; null when never completed.</param>
public sealed record CrashLogOperation(
    long Id,
    CrashLogRecordKind Kind,
    long Offset,
    long Length,
    ReadOnlyMemory<byte> Data,
    bool Fua,
    bool MayUnmap,
    int BeginIndex,
    int? CompleteIndex,
    bool? Ok)
{
    /// <summary>True for a WRITE, WRITE_ZEROES or TRIM: an operation that changes the image's contents.</summary>
    public bool ChangesData => Kind is CrashLogRecordKind.Write or CrashLogRecordKind.WriteZeroes or CrashLogRecordKind.Trim;
}
