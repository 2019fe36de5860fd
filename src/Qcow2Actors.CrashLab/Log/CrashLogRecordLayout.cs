namespace Qcow2Actors.CrashLab;

/// <summary>
/// On-disk layout of one crash log record (little-endian), followed by the write's data (WRITE only) and an
/// XxHash64 of everything before it: <c>recordLength:u32 kind:u8 flags:u8 reserved:u16 id:i64 offset:i64
/// length:i64 data checksum:u64</c>. For a completion, <c>id</c> is the id of the operation it completes.
/// </summary>
internal static class CrashLogRecordLayout
{
    public const int RecordLengthOffset = 0;
    public const int KindOffset = 4;
    public const int FlagsOffset = 5;
    public const int IdOffset = 8;
    public const int OffsetOffset = 16;
    public const int LengthOffset = 24;
    public const int FixedLength = 32;
    public const int ChecksumLength = 8;

    public const byte FlagFua = 1;
    public const byte FlagMayUnmap = 2;
    public const byte FlagOk = 4;

    /// <summary>Largest write payload a record may carry (NBD's own request limit is 32 MiB).</summary>
    public const int MaxDataLength = 64 * 1024 * 1024;
}
