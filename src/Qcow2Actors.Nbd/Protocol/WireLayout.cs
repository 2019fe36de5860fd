namespace Qcow2Actors.Nbd.Protocol;

// Byte layouts of the fixed-newstyle NBD structures (the NBD protocol document, proto.md); every
// integer field is big endian. One class per structure, so no code carries a bare offset.

/// <summary>The server's greeting: NBDMAGIC, IHAVEOPT, handshake flags.</summary>
internal static class ServerHello
{
    public const int PasswdOffset = 0;
    public const int OptMagicOffset = 8;
    public const int FlagsOffset = 16;
    public const int Size = 18;
}

/// <summary>The client's 32-bit flags that answer the greeting.</summary>
internal static class ClientFlagsField
{
    public const int Size = 4;
}

/// <summary>A client option header: IHAVEOPT, option, length of the data that follows.</summary>
internal static class OptionHeader
{
    public const int MagicOffset = 0;
    public const int OptionOffset = 8;
    public const int LengthOffset = 12;
    public const int Size = 16;
}

/// <summary>A server option reply header: reply magic, option, reply type, length of the data that follows.</summary>
internal static class OptionReplyHeader
{
    public const int MagicOffset = 0;
    public const int OptionOffset = 8;
    public const int TypeOffset = 12;
    public const int LengthOffset = 16;
    public const int Size = 20;
}

/// <summary>The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, then 124 zeroes unless NO_ZEROES was agreed.</summary>
internal static class ExportNameReply
{
    public const int SizeOffset = 0;
    public const int FlagsOffset = 8;
    public const int ShortLength = 10;
    public const int ReservedZeroes = 124;
    public const int FullLength = ShortLength + ReservedZeroes;
}

/// <summary>NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count of info requests, the 16-bit requests.</summary>
internal static class InfoRequestData
{
    public const int NameLengthOffset = 0;
    public const int NameOffset = 4;
    public const int CountSize = 2;
    public const int ItemSize = 2;
    /// <summary>Name length and request count with an empty name and no requests.</summary>
    public const int MinLength = NameOffset + CountSize;
}

/// <summary>NBD_REP_INFO carrying NBD_INFO_EXPORT: type, export size, transmission flags.</summary>
internal static class InfoExportPayload
{
    public const int TypeOffset = 0;
    public const int SizeOffset = 2;
    public const int FlagsOffset = 10;
    public const int Length = 12;
}

/// <summary>NBD_REP_INFO carrying NBD_INFO_BLOCK_SIZE: type, minimum, preferred and maximum block size.</summary>
internal static class InfoBlockSizePayload
{
    public const int TypeOffset = 0;
    public const int MinimumOffset = 2;
    public const int PreferredOffset = 6;
    public const int MaximumOffset = 10;
    public const int Length = 14;
}

/// <summary>NBD_REP_INFO carrying NBD_INFO_NAME or NBD_INFO_DESCRIPTION: type, then the text.</summary>
internal static class InfoStringPayload
{
    public const int TypeOffset = 0;
    public const int TextOffset = 2;
}

/// <summary>NBD_REP_SERVER (an NBD_OPT_LIST entry): name length, name, then the description.</summary>
internal static class ServerListPayload
{
    public const int NameLengthOffset = 0;
    public const int NameOffset = 4;
}

/// <summary>NBD_OPT_LIST/SET_META_CONTEXT data: export name length, name, query count, then length-prefixed queries.</summary>
internal static class MetaContextRequestData
{
    public const int NameLengthOffset = 0;
    public const int NameOffset = 4;
    public const int CountSize = 4;
    public const int QueryLengthSize = 4;
    /// <summary>Name length and query count with an empty name.</summary>
    public const int MinLength = NameOffset + CountSize;
}

/// <summary>NBD_REP_META_CONTEXT: context id, then the context name.</summary>
internal static class MetaContextPayload
{
    public const int IdOffset = 0;
    public const int NameOffset = 4;
}

/// <summary>A transmission request: magic, command flags, type, handle (cookie), offset, length; a WRITE's data follows.</summary>
internal static class RequestHeader
{
    public const int MagicOffset = 0;
    public const int FlagsOffset = 4;
    public const int TypeOffset = 6;
    public const int HandleOffset = 8;
    public const int OffsetOffset = 16;
    public const int LengthOffset = 24;
    public const int Size = 28;
}

/// <summary>A simple reply: magic, error, handle; a successful READ's data follows.</summary>
internal static class SimpleReplyHeader
{
    public const int MagicOffset = 0;
    public const int ErrorOffset = 4;
    public const int HandleOffset = 8;
    public const int Size = 16;
}

/// <summary>A structured reply chunk header: magic, chunk flags, chunk type, handle, payload length.</summary>
internal static class ChunkHeader
{
    public const int MagicOffset = 0;
    public const int FlagsOffset = 4;
    public const int TypeOffset = 6;
    public const int HandleOffset = 8;
    public const int LengthOffset = 16;
    public const int Size = 20;
}

/// <summary>NBD_REPLY_TYPE_OFFSET_DATA payload: the offset, then the data.</summary>
internal static class OffsetDataPayload
{
    public const int OffsetOffset = 0;
    public const int DataOffset = 8;
}

/// <summary>NBD_REPLY_TYPE_OFFSET_HOLE payload: the offset and the length of the zero run.</summary>
internal static class OffsetHolePayload
{
    public const int OffsetOffset = 0;
    public const int HoleSizeOffset = 8;
    public const int Length = 12;
}

/// <summary>NBD_REPLY_TYPE_ERROR payload: error, message length, message.</summary>
internal static class ErrorPayload
{
    public const int ErrorOffset = 0;
    public const int MessageLengthOffset = 4;
    public const int MessageOffset = 6;
}

/// <summary>NBD_REPLY_TYPE_BLOCK_STATUS payload: context id, then (length, flags) descriptors.</summary>
internal static class BlockStatusPayload
{
    public const int ContextIdOffset = 0;
    public const int DescriptorsOffset = 4;
    public const int DescriptorLengthOffset = 0;
    public const int DescriptorFlagsOffset = 4;
    public const int DescriptorSize = 8;
}
