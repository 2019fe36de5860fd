using System.Buffers.Binary;
using System.Runtime.Serialization;
using System.Text;
using Akka.Actor;
using Akka.Serialization;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>
/// The binary wire form of forwarded NBD requests and replies between nodes: fixed little-endian headers and the
/// payload as raw bytes (a JSON or generic serializer would copy and inflate every data block).
/// </summary>
/// <remarks>
/// Request (manifest "R"): op u8, flags u8, offset i64, length i64, data length i32, data.
/// Reply (manifest "P"): status u8, incarnation i64, lost-through i64, error u32, owner (i32 length + UTF-8),
/// message (i32 length + UTF-8), data length i32, data, extent count i32, then (length i64, flags u32) each.
/// </remarks>
internal sealed class ForwardingSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    /// <summary>The serializer id (unique in the actor system; Akka reserves 0-100).</summary>
    public const int Id = 7102415;

    private const string RequestManifest = "R";
    private const string ReplyManifest = "P";
    private const int RequestHeader = 1 + 1 + 8 + 8 + 4;

    /// <inheritdoc />
    public override int Identifier => Id;

    /// <inheritdoc />
    public override string Manifest(object o) => o switch
    {
        ForwardedRequest => RequestManifest,
        ForwardedReply => ReplyManifest,
        _ => throw new ArgumentException($"ForwardingSerializer cannot serialize {o.GetType()}"),
    };

    /// <inheritdoc />
    public override byte[] ToBinary(object obj) => obj switch
    {
        ForwardedRequest r => Request(r),
        ForwardedReply p => Reply(p),
        _ => throw new ArgumentException($"ForwardingSerializer cannot serialize {obj.GetType()}"),
    };

    /// <inheritdoc />
    public override object FromBinary(byte[] bytes, string manifest) => manifest switch
    {
        RequestManifest => ReadRequest(bytes),
        ReplyManifest => ReadReply(bytes),
        _ => throw new SerializationException($"ForwardingSerializer: unknown manifest '{manifest}'"),
    };

    private static byte[] Request(ForwardedRequest r)
    {
        var bytes = new byte[RequestHeader + r.Data.Length];
        var span = bytes.AsSpan();
        span[0] = (byte)r.Op;
        span[1] = (byte)r.Flags;
        BinaryPrimitives.WriteInt64LittleEndian(span[2..], r.Offset);
        BinaryPrimitives.WriteInt64LittleEndian(span[10..], r.Length);
        BinaryPrimitives.WriteInt32LittleEndian(span[18..], r.Data.Length);
        r.Data.CopyTo(span[RequestHeader..]);
        return bytes;
    }

    private static ForwardedRequest ReadRequest(byte[] bytes)
    {
        var span = bytes.AsSpan();
        if (span.Length < RequestHeader) throw new SerializationException($"forwarded request of {span.Length} bytes is shorter than its header");
        int data = BinaryPrimitives.ReadInt32LittleEndian(span[18..]);
        if (data < 0 || data != span.Length - RequestHeader)
            throw new SerializationException($"forwarded request: data length {data} does not match the {span.Length - RequestHeader} bytes that follow the header");
        return new ForwardedRequest((ForwardedOp)span[0], (ForwardedFlags)span[1], BinaryPrimitives.ReadInt64LittleEndian(span[2..]),
            BinaryPrimitives.ReadInt64LittleEndian(span[10..]), span[RequestHeader..].ToArray());
    }

    private static byte[] Reply(ForwardedReply p)
    {
        int owner = Encoding.UTF8.GetByteCount(p.Owner), message = Encoding.UTF8.GetByteCount(p.Message);
        var bytes = new byte[1 + 8 + 8 + 4 + 4 + owner + 4 + message + 4 + p.Data.Length + 4 + (p.Extents.Count * 12)];
        var span = bytes.AsSpan();
        int at = 0;
        span[at++] = (byte)p.Status;
        BinaryPrimitives.WriteInt64LittleEndian(span[at..], p.Life.Incarnation); at += 8;
        BinaryPrimitives.WriteInt64LittleEndian(span[at..], p.Life.LostThrough); at += 8;
        BinaryPrimitives.WriteUInt32LittleEndian(span[at..], p.Error); at += 4;
        at = WriteString(span, at, p.Owner, owner);
        at = WriteString(span, at, p.Message, message);
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], p.Data.Length); at += 4;
        p.Data.CopyTo(span[at..]); at += p.Data.Length;
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], p.Extents.Count); at += 4;
        foreach (var e in p.Extents)
        {
            BinaryPrimitives.WriteInt64LittleEndian(span[at..], e.Length); at += 8;
            BinaryPrimitives.WriteUInt32LittleEndian(span[at..], (uint)e.Flags); at += 4;
        }
        return bytes;
    }

    private static int WriteString(Span<byte> span, int at, string text, int length)
    {
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], length);
        return at + 4 + Encoding.UTF8.GetBytes(text, span[(at + 4)..]);
    }

    private static ForwardedReply ReadReply(byte[] bytes)
    {
        try
        {
            var span = bytes.AsSpan();
            int at = 0;
            var status = (ForwardedStatus)span[at++];
            long incarnation = BinaryPrimitives.ReadInt64LittleEndian(span[at..]); at += 8;
            long lost = BinaryPrimitives.ReadInt64LittleEndian(span[at..]); at += 8;
            uint error = BinaryPrimitives.ReadUInt32LittleEndian(span[at..]); at += 4;
            string owner = ReadString(span, ref at), message = ReadString(span, ref at);
            int data = BinaryPrimitives.ReadInt32LittleEndian(span[at..]); at += 4;
            var payload = span.Slice(at, data).ToArray(); at += data;
            int count = BinaryPrimitives.ReadInt32LittleEndian(span[at..]); at += 4;
            if (count < 0 || count > (span.Length - at) / 12) throw new SerializationException($"forwarded reply: {count} extents do not fit its {span.Length} bytes");
            var extents = new NbdExtent[count];
            for (int i = 0; i < count; i++, at += 12)
                extents[i] = new NbdExtent(BinaryPrimitives.ReadInt64LittleEndian(span[at..]), (NbdExtentFlags)BinaryPrimitives.ReadUInt32LittleEndian(span[(at + 8)..]));
            return new ForwardedReply(status, new OwnerLife(incarnation, lost), owner, error, message, payload, extents);
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new SerializationException($"forwarded reply of {bytes.Length} bytes is truncated", ex);
        }
    }

    private static string ReadString(ReadOnlySpan<byte> span, ref int at)
    {
        int length = BinaryPrimitives.ReadInt32LittleEndian(span[at..]);
        var text = Encoding.UTF8.GetString(span.Slice(at + 4, length));
        at += 4 + length;
        return text;
    }
}
