namespace Qcow2Actors.CrashLab;

/// <summary>One whole, checksum-verified record of a crash log, in file order.</summary>
/// <param name="Index">Position of the record in the log (0 for the first record after the header).</param>
/// <param name="FileOffset">Byte offset of the record in the log file.</param>
/// <param name="Kind">What happened.</param>
/// <param name="Id">The operation's id; for <see cref="CrashLogRecordKind.Complete"/>, the id it completes.</param>
/// <param name="Offset">Guest offset of a write, zero or trim (0 otherwise).</param>
/// <param name="Length">Length in bytes of a write, zero or trim (0 otherwise).</param>
/// <param name="Data">The bytes of a WRITE (empty otherwise).</param>
/// <param name="Fua">The request carried FUA.</param>
/// <param name="MayUnmap">A WRITE_ZEROES allowed the range to be unmapped.</param>
/// <param name="Ok">For a completion: the operation succeeded.</param>
public sealed record CrashLogRecord(
    int Index,
    long FileOffset,
    CrashLogRecordKind Kind,
    long Id,
    long Offset,
    long Length,
    ReadOnlyMemory<byte> Data,
    bool Fua,
    bool MayUnmap,
    bool Ok);
