namespace Qcow2Actors.CrashLab;

/// <summary>What a crash log record says happened. The numeric values are the on-disk kind byte.</summary>
public enum CrashLogRecordKind : byte
{
    /// <summary>A WRITE was issued; the record carries its data.</summary>
    Write = 1,
    /// <summary>A WRITE_ZEROES was issued.</summary>
    WriteZeroes = 2,
    /// <summary>A TRIM was issued.</summary>
    Trim = 3,
    /// <summary>A FLUSH was issued.</summary>
    Flush = 4,
    /// <summary>An earlier operation finished (successfully or not) before its reply was sent.</summary>
    Complete = 5,
}
