using System.Buffers.Binary;
using Qcow2Actors.Nbd.Client;
using Qcow2Actors.Nbd.Protocol;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Tests.Client;

/// <summary><see cref="NbdReplyReader"/> fed hand-made structured reply chunks, as a hostile server would send them.</summary>
public sealed class NbdReplyReaderTests
{
    private const int ReadLength = 4096;

    private static byte[] HoleChunk(ulong cookie, ulong offset, uint length, bool done)
    {
        var chunk = new byte[ChunkHeader.Size + OffsetHolePayload.Length];
        BinaryPrimitives.WriteUInt32BigEndian(chunk, StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(ChunkHeader.FlagsOffset), done ? ReplyFlagDone : (ushort)0);
        BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(ChunkHeader.TypeOffset), ReplyTypeOffsetHole);
        BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(ChunkHeader.HandleOffset), cookie);
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(ChunkHeader.LengthOffset), OffsetHolePayload.Length);
        var payload = chunk.AsSpan(ChunkHeader.Size);
        BinaryPrimitives.WriteUInt64BigEndian(payload[OffsetHolePayload.OffsetOffset..], offset);
        BinaryPrimitives.WriteUInt32BigEndian(payload[OffsetHolePayload.HoleSizeOffset..], length);
        return chunk;
    }

    private static byte[] DataChunk(ulong cookie, ulong offset, byte[] data, bool done)
    {
        var chunk = new byte[ChunkHeader.Size + OffsetDataPayload.DataOffset + data.Length];
        BinaryPrimitives.WriteUInt32BigEndian(chunk, StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(ChunkHeader.FlagsOffset), done ? ReplyFlagDone : (ushort)0);
        BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(ChunkHeader.TypeOffset), ReplyTypeOffsetData);
        BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(ChunkHeader.HandleOffset), cookie);
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(ChunkHeader.LengthOffset), (uint)(OffsetDataPayload.DataOffset + data.Length));
        BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(ChunkHeader.Size + OffsetDataPayload.OffsetOffset), offset);
        data.CopyTo(chunk.AsSpan(ChunkHeader.Size + OffsetDataPayload.DataOffset));
        return chunk;
    }

    private static async Task<(NbdPendingRequest First, NbdPendingRequest Second)> RunAsync(long offset, params byte[][] chunks)
    {
        var inFlight = new NbdInFlight();
        var first = new NbdPendingRequest(CmdRead, offset, ReadLength) { Buffer = Enumerable.Repeat((byte)0xEE, ReadLength).ToArray() };
        var second = new NbdPendingRequest(CmdRead, 0, ReadLength) { Buffer = new byte[ReadLength] };
        Assert.Equal(1ul, inFlight.Register(first));
        Assert.Equal(2ul, inFlight.Register(second));
        await new NbdReplyReader(new MemoryStream([.. chunks.SelectMany(c => c)]), inFlight, "127.0.0.1:10809", "disk").RunAsync();
        return (first, second);
    }

    [Fact]
    public async Task Two_hole_chunks_over_the_same_half_end_the_connection_and_fail_every_pending_request()
    {
        var (first, second) = await RunAsync(8192,
            HoleChunk(1, 8192, ReadLength / 2, done: false),
            HoleChunk(1, 8192, ReadLength / 2, done: true)); // the sum of lengths is the whole read; the second half was never written

        var ex = await Assert.ThrowsAnyAsync<IOException>(() => first.Completion);
        Assert.Equal("nbd server 127.0.0.1:10809 export 'disk': protocol error: the server sent overlapping read chunks at 8192 length 2048 and at 8192 length 2048 for the read at 8192 length 4096", ex.Message);
        var other = await Assert.ThrowsAnyAsync<IOException>(() => second.Completion);
        Assert.Equal(ex.Message, other.Message);
    }

    [Fact]
    public async Task A_data_chunk_overlapping_part_of_an_earlier_hole_ends_the_connection()
    {
        var (first, _) = await RunAsync(0,
            HoleChunk(1, 1024, 2048, done: false),
            DataChunk(1, 0, new byte[1536], done: false),
            HoleChunk(1, 3072, 1024, done: true));

        var ex = await Assert.ThrowsAnyAsync<IOException>(() => first.Completion);
        Assert.Contains("protocol error: the server sent overlapping read chunks at 0 length 1536 and at 1024 length 2048", ex.Message);
    }

    [Fact]
    public async Task Adjacent_chunks_in_any_order_cover_the_read_exactly()
    {
        var data = Enumerable.Range(0, 1024).Select(i => (byte)(i | 1)).ToArray();
        var (first, second) = await RunAsync(0,
            HoleChunk(1, 3072, 1024, done: false),
            DataChunk(1, 0, data, done: false),
            HoleChunk(1, 1024, 2048, done: true));

        await first.Completion;
        Assert.Equal(0u, first.Error);
        Assert.Equal(data, first.Buffer[..1024].ToArray());
        Assert.True(first.Buffer[1024..].ToArray().All(b => b == 0));
        await Assert.ThrowsAnyAsync<IOException>(() => second.Completion); // the stream ended with it still waiting
    }
}
