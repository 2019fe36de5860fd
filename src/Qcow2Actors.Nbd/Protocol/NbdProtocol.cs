namespace Qcow2Actors.Nbd.Protocol;

/// <summary>Wire values of the fixed-newstyle NBD protocol (magics, flags, option, command and reply types); layouts are in WireLayout.cs.</summary>
internal static class NbdProtocol
{
    public const ulong InitPasswd = 0x4e42444d41474943; // "NBDMAGIC"
    public const ulong OptMagic = 0x49484156454F5054;   // "IHAVEOPT"
    public const ulong OptReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    // Handshake flags (server) and client flags.
    public const ushort FlagFixedNewstyle = 1 << 0;
    public const ushort FlagNoZeroes = 1 << 1;
    public const uint ClientFlagFixedNewstyle = 1 << 0;
    public const uint ClientFlagNoZeroes = 1 << 1;

    // Transmission flags.
    public const ushort FlagHasFlags = 1 << 0;
    public const ushort FlagReadOnly = 1 << 1;
    public const ushort FlagSendFlush = 1 << 2;
    public const ushort FlagSendFua = 1 << 3;
    public const ushort FlagSendTrim = 1 << 5;
    public const ushort FlagSendWriteZeroes = 1 << 6;
    public const ushort FlagSendDf = 1 << 7;
    public const ushort FlagCanMultiConn = 1 << 8;
    public const ushort FlagSendFastZero = 1 << 11;

    // Options.
    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptList = 3;
    public const uint OptStartTls = 5;
    public const uint OptInfo = 6;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptListMetaContext = 9;
    public const uint OptSetMetaContext = 10;

    // Option replies.
    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000001;
    public const uint RepErrPolicy = 0x80000002;
    public const uint RepErrInvalid = 0x80000003;
    public const uint RepErrTlsReqd = 0x80000005;
    public const uint RepErrUnknown = 0x80000006;
    public const uint RepErrShutdown = 0x80000007;
    public const uint RepErrTooBig = 0x80000009;
    /// <summary>Every option error reply has this bit set.</summary>
    public const uint RepErrorBit = 0x80000000;

    // NBD_INFO_* types.
    public const ushort InfoExport = 0;
    public const ushort InfoName = 1;
    public const ushort InfoDescription = 2;
    public const ushort InfoBlockSize = 3;

    // Commands.
    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisc = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdTrim = 4;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdBlockStatus = 7;

    // Command flags.
    public const ushort CmdFlagFua = 1 << 0;
    public const ushort CmdFlagNoHole = 1 << 1;
    public const ushort CmdFlagDf = 1 << 2;
    public const ushort CmdFlagReqOne = 1 << 3;
    public const ushort CmdFlagFastZero = 1 << 4;

    // Structured reply chunk flags and types.
    public const ushort ReplyFlagDone = 1 << 0;
    public const ushort ReplyTypeNone = 0;
    public const ushort ReplyTypeOffsetData = 1;
    public const ushort ReplyTypeOffsetHole = 2;
    public const ushort ReplyTypeBlockStatus = 5;
    public const ushort ReplyTypeError = 0x8001;
    public const ushort ReplyTypeErrorOffset = 0x8002;
    /// <summary>Every error chunk type has this bit set, so a client can read one it does not know.</summary>
    public const ushort ReplyTypeErrorBit = 0x8000;

    /// <summary>The magic an oldstyle server sends where a newstyle one sends IHAVEOPT.</summary>
    public const ulong OldstyleMagic = 0x00420281861253;

    // Metadata context names and namespaces (qemu-nbd's spelling).
    public const string BaseNamespace = "base:";
    public const string BaseAllocation = "base:allocation";
    public const string QemuNamespace = "qemu:";
    public const string AllocationDepthContext = "qemu:allocation-depth";
    public const string DirtyBitmapPrefix = "qemu:dirty-bitmap:";

    /// <summary>The id we hand out for base:allocation; any nonzero value would do.</summary>
    public const uint BaseAllocationId = 1;

    /// <summary>The id of qemu:allocation-depth.</summary>
    public const uint AllocationDepthId = 2;

    /// <summary>The id of the first exported bitmap's qemu:dirty-bitmap:NAME; the next ones follow in export order.</summary>
    public const uint FirstDirtyBitmapId = 3;

    /// <summary>Strings (names, queries, messages) are capped at 4096 bytes by the protocol.</summary>
    public const int MaxStringLength = 4096;
}
