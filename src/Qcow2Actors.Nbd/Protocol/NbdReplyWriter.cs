using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Qcow2Actors.Engine;
using Qcow2Actors.Nbd.Metrics;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Frames transmission replies: simple replies, and with structured replies negotiated the
/// OFFSET_DATA, OFFSET_HOLE, ERROR, NONE and BLOCK_STATUS chunks. Every reply is one buffer from
/// the shared pool, handed to the <see cref="ReplySender"/>; a reply is one chunk with the DONE flag
/// (one content chunk, one error, or one status list), except BLOCK_STATUS with several metadata
/// contexts: one status chunk per context, DONE on the last.
/// Every reply framed here completes its request in <see cref="Metrics"/>.
/// </summary>
internal sealed class NbdReplyWriter(ReplySender sender, bool structured, ExportMetrics metrics)
{
    /// <summary>Where the connection's requests are counted and timed.</summary>
    public ExportMetrics Metrics => metrics;

    /// <summary>
    /// Room a read leaves in front of its data for the reply header, so header and data leave in one
    /// buffer without a copy: the simple header, or a chunk header plus the OFFSET_DATA offset.
    /// </summary>
    public int ReadHeaderRoom { get; } = structured ? ChunkHeader.Size + OffsetDataPayload.DataOffset : SimpleReplyHeader.Size;

    /// <summary>
    /// Sends the data a read put at <see cref="ReadHeaderRoom"/> in <paramref name="buffer"/>
    /// (rented from the shared pool; the sender returns it). All-zero data goes as a hole chunk
    /// when structured replies allow, which saves the client reading (and us sending) the bytes.
    /// </summary>
    public void ReadData(byte[] buffer, in NbdRequest request, long charge)
    {
        metrics.Finish(request, NbdError.None, request.Length);
        var length = (int)request.Length;
        if (!structured)
        {
            WriteDataHeader(buffer, request, length);
            sender.Send(new OutgoingReply(buffer, SimpleReplyHeader.Size + length, charge), request);
        }
        else if (length == 0)
        {
            WriteChunkHeader(buffer, ReplyTypeNone, request.Handle, 0);
            sender.Send(new OutgoingReply(buffer, ChunkHeader.Size, charge), request);
        }
        else if (buffer.Length >= ChunkHeader.Size + OffsetHolePayload.Length && !buffer.AsSpan(ReadHeaderRoom, length).ContainsAnyExcept((byte)0))
        {
            WriteChunkHeader(buffer, ReplyTypeOffsetHole, request.Handle, OffsetHolePayload.Length);
            var hole = buffer.AsSpan(ChunkHeader.Size);
            BinaryPrimitives.WriteUInt64BigEndian(hole[OffsetHolePayload.OffsetOffset..], request.Offset);
            BinaryPrimitives.WriteUInt32BigEndian(hole[OffsetHolePayload.HoleSizeOffset..], request.Length);
            sender.Send(new OutgoingReply(buffer, ChunkHeader.Size + OffsetHolePayload.Length, charge), request);
        }
        else
        {
            WriteDataHeader(buffer, request, length);
            sender.Send(new OutgoingReply(buffer, ReadHeaderRoom + length, charge), request);
        }
    }

    /// <summary>The <see cref="ReadHeaderRoom"/> bytes in front of a read's <paramref name="length"/> bytes of data: a simple header, or an OFFSET_DATA chunk's.</summary>
    private void WriteDataHeader(byte[] buffer, in NbdRequest request, int length)
    {
        if (!structured)
        {
            WriteSimpleHeader(buffer, NbdError.None, request.Handle);
            return;
        }
        WriteChunkHeader(buffer, ReplyTypeOffsetData, request.Handle, (uint)(OffsetDataPayload.DataOffset + length));
        BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(ChunkHeader.Size + OffsetDataPayload.OffsetOffset), request.Offset);
    }

    /// <summary>True when read data may go straight from a host file (<see cref="ReadFile"/>): a plain connection on Linux.</summary>
    public bool SendsFiles => sender.SendsFiles;

    /// <summary>
    /// Sends a read's reply whose data is <paramref name="pinned"/> in a host file: the header from a pooled buffer,
    /// the data from the file (the sender disposes the pin).
    /// </summary>
    public void ReadFile(HostFileRange pinned, in NbdRequest request, long charge)
    {
        metrics.Finish(request, NbdError.None, request.Length);
        byte[] buffer;
        try
        {
            buffer = RequestBuffers.Rent(ReadHeaderRoom);
        }
        catch
        {
            pinned.Dispose();
            throw;
        }
        WriteDataHeader(buffer, request, pinned.Length);
#pragma warning disable CA2000 // The sender owns the body from here: it disposes it after the send, or when it drops the reply.
        sender.Send(new OutgoingReply(buffer, ReadHeaderRoom, charge, new FileReplyBody(pinned)), request);
#pragma warning restore CA2000
    }

    /// <summary>
    /// A payload-free reply: a simple reply where that is allowed, else a NONE chunk for success or
    /// an ERROR chunk that carries <paramref name="message"/>.
    /// </summary>
    public void Status(in NbdRequest request, NbdError error, string? message, long charge)
    {
        metrics.Finish(request, error, error == NbdError.None && request.Type == CmdWrite ? request.Length : 0);
        if (structured && (error != NbdError.None || request.Type is CmdRead or CmdBlockStatus))
        {
            if (error == NbdError.None) Chunk(request, ReplyTypeNone, default, charge);
            else Error(request, error, message, charge);
            return;
        }
        var buffer = RequestBuffers.Rent(SimpleReplyHeader.Size);
        WriteSimpleHeader(buffer, error, request.Handle);
        sender.Send(new OutgoingReply(buffer, SimpleReplyHeader.Size, charge), request);
    }

    /// <summary>
    /// A BLOCK_STATUS reply: one chunk per entry of <paramref name="chunks"/> (a context id and how many of
    /// <paramref name="descriptors"/>, taken in order, are its), all in one buffer; only the last chunk
    /// carries the DONE flag.
    /// </summary>
    public void BlockStatus(in NbdRequest request, ReadOnlySpan<(uint Length, uint Flags)> descriptors,
        ReadOnlySpan<(uint ContextId, int Count)> chunks, long charge)
    {
        metrics.Finish(request, NbdError.None, 0);
        var total = chunks.Length * (ChunkHeader.Size + BlockStatusPayload.DescriptorsOffset) + BlockStatusPayload.DescriptorSize * descriptors.Length;
        var buffer = RequestBuffers.Rent(total);
        int at = 0, next = 0;
        for (var c = 0; c < chunks.Length; c++)
        {
            var (contextId, count) = chunks[c];
            var payloadLength = BlockStatusPayload.DescriptorsOffset + BlockStatusPayload.DescriptorSize * count;
            WriteChunkHeader(buffer.AsSpan(at), ReplyTypeBlockStatus, request.Handle, (uint)payloadLength, last: c == chunks.Length - 1);
            var payload = buffer.AsSpan(at + ChunkHeader.Size, payloadLength);
            BinaryPrimitives.WriteUInt32BigEndian(payload[BlockStatusPayload.ContextIdOffset..], contextId);
            for (var i = 0; i < count; i++)
            {
                var descriptor = payload[(BlockStatusPayload.DescriptorsOffset + BlockStatusPayload.DescriptorSize * i)..];
                BinaryPrimitives.WriteUInt32BigEndian(descriptor[BlockStatusPayload.DescriptorLengthOffset..], descriptors[next + i].Length);
                BinaryPrimitives.WriteUInt32BigEndian(descriptor[BlockStatusPayload.DescriptorFlagsOffset..], descriptors[next + i].Flags);
            }
            next += count;
            at += ChunkHeader.Size + payloadLength;
        }
        sender.Send(new OutgoingReply(buffer, total, charge), request);
    }

    private void Error(in NbdRequest request, NbdError error, string? message, long charge)
    {
        var text = Encoding.UTF8.GetBytes(message ?? "");
        var textLength = Math.Min(text.Length, MaxStringLength);
        Span<byte> payload = stackalloc byte[ErrorPayload.MessageOffset + textLength];
        BinaryPrimitives.WriteUInt32BigEndian(payload[ErrorPayload.ErrorOffset..], (uint)error);
        BinaryPrimitives.WriteUInt16BigEndian(payload[ErrorPayload.MessageLengthOffset..], (ushort)textLength);
        text.AsSpan(0, textLength).CopyTo(payload[ErrorPayload.MessageOffset..]);
        Chunk(request, ReplyTypeError, payload, charge);
    }

    private void Chunk(in NbdRequest request, ushort type, ReadOnlySpan<byte> payload, long charge)
    {
        var buffer = RequestBuffers.Rent(ChunkHeader.Size + payload.Length);
        WriteChunkHeader(buffer, type, request.Handle, (uint)payload.Length);
        payload.CopyTo(buffer.AsSpan(ChunkHeader.Size));
        sender.Send(new OutgoingReply(buffer, ChunkHeader.Size + payload.Length, charge), request);
    }

    private static void WriteSimpleHeader(Span<byte> buffer, NbdError error, ulong handle)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer[SimpleReplyHeader.MagicOffset..], SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[SimpleReplyHeader.ErrorOffset..], (uint)error);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[SimpleReplyHeader.HandleOffset..], handle);
    }

    private static void WriteChunkHeader(Span<byte> buffer, ushort type, ulong handle, uint length, bool last = true)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer[ChunkHeader.MagicOffset..], StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[ChunkHeader.FlagsOffset..], last ? ReplyFlagDone : (ushort)0);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[ChunkHeader.TypeOffset..], type);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[ChunkHeader.HandleOffset..], handle);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[ChunkHeader.LengthOffset..], length);
    }
}
