namespace Qcow2Actors.CrashLab;

/// <summary>
/// On-disk layout of the crash log header (little-endian), followed by the image path and the snapshot name in
/// UTF-8 and an XxHash64 of everything before it:
/// <c>magic[8] version:u32 headerLength:u32 virtualSize:i64 startedUnixMs:i64 pathLength:u32 snapshotLength:u32
/// path snapshot checksum:u64</c>.
/// </summary>
internal static class CrashLogHeaderLayout
{
    /// <summary>"Q2ACRLOG": tells a crash log from any other file at the first read.</summary>
    public static ReadOnlySpan<byte> Magic => "Q2ACRLOG"u8;

    public const uint CurrentVersion = 1;

    public const int MagicOffset = 0;
    public const int VersionOffset = 8;
    public const int HeaderLengthOffset = 12;
    public const int VirtualSizeOffset = 16;
    public const int StartedOffset = 24;
    public const int PathLengthOffset = 32;
    public const int SnapshotLengthOffset = 36;
    public const int FixedLength = 40;
    public const int ChecksumLength = 8;

    /// <summary>Longest path or snapshot name accepted: a header claiming more is corrupt, not a bigger log.</summary>
    public const int MaxStringLength = 64 * 1024;
}
