using System.Buffers.Binary;
using System.Text;
using Qcow2Actors.Nbd.Protocol;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// The one task that reads the connection: matches each simple reply or structured chunk to its request by cookie,
/// puts read data straight into the caller's buffer, and ends the connection on EOF or on a reply that breaks the
/// protocol (after which nothing on the stream can be trusted).
/// </summary>
internal sealed class NbdReplyReader(Stream stream, NbdInFlight inFlight, string endpoint, string export)
{
    /// <summary>Non-data chunks above this are a broken server (a 2 GiB block-status request needs far less).</summary>
    private const int MaxChunkPayload = 64 << 20;

    private readonly byte[] _header = new byte[ChunkHeader.Size];

    public async Task RunAsync()
    {
        try
        {
            while (true)
            {
                if (!await ReadMagicAsync()) throw Closed("the server closed the connection");
                var magic = BinaryPrimitives.ReadUInt32BigEndian(_header);
                if (magic == SimpleReplyMagic) await SimpleReplyAsync();
                else if (magic == StructuredReplyMagic) await ChunkAsync();
                else throw Closed(FormattableString.Invariant($"protocol error: reply magic 0x{magic:x8}"));
            }
        }
        catch (Exception ex)
        {
            inFlight.Close(ex as NbdConnectionClosedException ?? Closed("the connection failed: " + NbdClientErrors.OneLine(ex.Message), ex));
        }
    }

    /// <summary>Reads a reply's magic; false on a clean EOF between replies.</summary>
    private async Task<bool> ReadMagicAsync()
    {
        var read = 0;
        while (read < sizeof(uint))
        {
            var n = await stream.ReadAsync(_header.AsMemory(read, sizeof(uint) - read));
            if (n == 0)
            {
                if (read == 0) return false;
                throw Closed("the server closed the connection in the middle of a reply");
            }
            read += n;
        }
        return true;
    }

    private async Task SimpleReplyAsync()
    {
        await ReadExactlyAsync(_header.AsMemory(sizeof(uint), SimpleReplyHeader.Size - sizeof(uint)));
        var error = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(SimpleReplyHeader.ErrorOffset));
        var cookie = BinaryPrimitives.ReadUInt64BigEndian(_header.AsSpan(SimpleReplyHeader.HandleOffset));
        var request = inFlight.Find(cookie) ?? throw Closed(FormattableString.Invariant($"protocol error: reply to unknown cookie {cookie}"));
        if (error != 0) request.RecordError(error, null);
        else if (request.Command == CmdRead) await ReadExactlyAsync(request.Buffer);
        else if (request.Command == CmdBlockStatus) request.RecordError((uint)NbdError.IoError, "a simple reply to block-status carries no extents");
        inFlight.Remove(cookie);
        request.Complete();
    }

    private async Task ChunkAsync()
    {
        await ReadExactlyAsync(_header.AsMemory(sizeof(uint), ChunkHeader.Size - sizeof(uint)));
        var flags = BinaryPrimitives.ReadUInt16BigEndian(_header.AsSpan(ChunkHeader.FlagsOffset));
        var type = BinaryPrimitives.ReadUInt16BigEndian(_header.AsSpan(ChunkHeader.TypeOffset));
        var cookie = BinaryPrimitives.ReadUInt64BigEndian(_header.AsSpan(ChunkHeader.HandleOffset));
        var length = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(ChunkHeader.LengthOffset));
        var request = inFlight.Find(cookie) ?? throw Closed(FormattableString.Invariant($"protocol error: chunk for unknown cookie {cookie}"));

        switch (type)
        {
            case ReplyTypeNone:
                if (length != 0 || (flags & ReplyFlagDone) == 0) throw Closed("protocol error: malformed NBD_REPLY_TYPE_NONE");
                break;
            case ReplyTypeOffsetData when request.Command == CmdRead:
                await OffsetDataAsync(request, length);
                break;
            case ReplyTypeOffsetHole when request.Command == CmdRead:
                await OffsetHoleAsync(request, length);
                break;
            case ReplyTypeBlockStatus when request.Command == CmdBlockStatus:
                BlockStatus(request, await PayloadAsync(length));
                break;
            default:
                if ((type & ReplyTypeErrorBit) == 0)
                    throw Closed(FormattableString.Invariant($"protocol error: chunk type {type} for a {NbdClientErrors.CommandName(request.Command)}"));
                Error(request, await PayloadAsync(length));
                break;
        }

        if ((flags & ReplyFlagDone) == 0) return;
        inFlight.Remove(cookie);
        if (request.Command == CmdRead && request.Error == 0 && request.Covered != request.Length)
            request.RecordError((uint)NbdError.IoError, FormattableString.Invariant($"the server's chunks covered {request.Covered} of {request.Length} bytes"));
        if (request.Command == CmdBlockStatus && request.Error == 0 && request.Extents is null)
            request.RecordError((uint)NbdError.IoError, "the server sent no extents for the context");
        request.Complete();
    }

    private async Task OffsetDataAsync(NbdPendingRequest request, uint length)
    {
        if (length <= OffsetDataPayload.DataOffset) throw Closed("protocol error: empty NBD_REPLY_TYPE_OFFSET_DATA");
        var at = await ReadOffsetAsync();
        long dataLength = length - OffsetDataPayload.DataOffset;
        var start = CheckInside(request, at, dataLength, "OFFSET_DATA");
        Cover(request, start, dataLength);
        await ReadExactlyAsync(request.Buffer.Slice((int)start, (int)dataLength));
    }

    private async Task OffsetHoleAsync(NbdPendingRequest request, uint length)
    {
        if (length != OffsetHolePayload.Length) throw Closed("protocol error: malformed NBD_REPLY_TYPE_OFFSET_HOLE");
        var payload = await PayloadAsync(length);
        var at = BinaryPrimitives.ReadUInt64BigEndian(payload.AsSpan(OffsetHolePayload.OffsetOffset));
        long holeLength = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(OffsetHolePayload.HoleSizeOffset));
        if (holeLength == 0) throw Closed("protocol error: empty NBD_REPLY_TYPE_OFFSET_HOLE");
        var start = CheckInside(request, at, holeLength, "OFFSET_HOLE");
        Cover(request, start, holeLength);
        request.Buffer.Span.Slice((int)start, (int)holeLength).Clear();
    }

    private long CheckInside(NbdPendingRequest request, ulong at, long length, string chunk)
    {
        if (at < (ulong)request.Offset || at - (ulong)request.Offset + (ulong)length > (ulong)request.Length)
            throw Closed(FormattableString.Invariant($"protocol error: {chunk} chunk at {at} length {length} outside the read at {request.Offset} length {request.Length}"));
        return (long)(at - (ulong)request.Offset);
    }

    /// <summary>Overlapping chunks break the protocol: fail the connection rather than trust any byte count.</summary>
    private void Cover(NbdPendingRequest request, long start, long length)
    {
        if (request.TryCover(start, length, out var earlier)) return;
        throw Closed(FormattableString.Invariant(
            $"protocol error: the server sent overlapping read chunks at {request.Offset + start} length {length} and at {request.Offset + earlier.Start} length {earlier.End - earlier.Start} for the read at {request.Offset} length {request.Length}"));
    }

    private async Task<ulong> ReadOffsetAsync()
    {
        var offset = new byte[OffsetDataPayload.DataOffset];
        await ReadExactlyAsync(offset);
        return BinaryPrimitives.ReadUInt64BigEndian(offset.AsSpan(OffsetDataPayload.OffsetOffset));
    }

    private void BlockStatus(NbdPendingRequest request, byte[] payload)
    {
        if (payload.Length < BlockStatusPayload.DescriptorsOffset + BlockStatusPayload.DescriptorSize
            || (payload.Length - BlockStatusPayload.DescriptorsOffset) % BlockStatusPayload.DescriptorSize != 0)
            throw Closed("protocol error: malformed NBD_REPLY_TYPE_BLOCK_STATUS");
        if (BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(BlockStatusPayload.ContextIdOffset)) != request.ContextId) return;
        var extents = new List<NbdExtent>((payload.Length - BlockStatusPayload.DescriptorsOffset) / BlockStatusPayload.DescriptorSize);
        long total = 0;
        for (var at = BlockStatusPayload.DescriptorsOffset; at < payload.Length && total < request.Length; at += BlockStatusPayload.DescriptorSize)
        {
            long length = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(at + BlockStatusPayload.DescriptorLengthOffset));
            var flags = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(at + BlockStatusPayload.DescriptorFlagsOffset));
            if (length == 0) throw Closed("protocol error: a zero-length block-status extent");
            length = Math.Min(length, request.Length - total); // the last extent may run past the request: clip it
            extents.Add(new NbdExtent(length, flags));
            total += length;
        }
        request.Extents = extents;
    }

    private static void Error(NbdPendingRequest request, byte[] payload)
    {
        if (payload.Length < ErrorPayload.MessageOffset)
        {
            request.RecordError((uint)NbdError.IoError, "a malformed error chunk");
            return;
        }
        var error = BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(ErrorPayload.ErrorOffset));
        int messageLength = BinaryPrimitives.ReadUInt16BigEndian(payload.AsSpan(ErrorPayload.MessageLengthOffset));
        messageLength = Math.Min(messageLength, payload.Length - ErrorPayload.MessageOffset);
        request.RecordError(error, Encoding.UTF8.GetString(payload.AsSpan(ErrorPayload.MessageOffset, messageLength)));
    }

    private async Task<byte[]> PayloadAsync(uint length)
    {
        if (length > MaxChunkPayload) throw Closed(FormattableString.Invariant($"protocol error: a {length}-byte reply chunk"));
        var payload = new byte[length];
        await ReadExactlyAsync(payload);
        return payload;
    }

    private async Task ReadExactlyAsync(Memory<byte> buffer)
    {
        try
        {
            await stream.ReadExactlyAsync(buffer);
        }
        catch (EndOfStreamException ex)
        {
            throw Closed("the server closed the connection in the middle of a reply", ex);
        }
    }

    private IOException Closed(string why, Exception? inner = null) => NbdClientErrors.Closed(endpoint, export, why, inner);
}
