using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;

namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// One persisted event as the file stores it: already serialized by Akka's serialization. <see cref="Data"/> may be
/// several buffers (a pending journal batch's chunks, <see cref="ISequenceSerializer"/>); read back, it is one.
/// </summary>
internal sealed record StoredEvent(
    long SequenceNr,
    long Timestamp,
    int SerializerId,
    string SerializerManifest,
    string Manifest,
    string WriterGuid,
    ReadOnlySequence<byte> Data)
{
    /// <summary>An event whose data is one array.</summary>
    public StoredEvent(long sequenceNr, long timestamp, int serializerId, string serializerManifest, string manifest, string writerGuid, byte[] data)
        : this(sequenceNr, timestamp, serializerId, serializerManifest, manifest, writerGuid, new ReadOnlySequence<byte>(data))
    {
    }

    /// <summary>The data as one array: the array itself when it is one whole array, else a copy.</summary>
    public byte[] DataArray() =>
        Data.IsSingleSegment && MemoryMarshal.TryGetArray(Data.First, out var whole) && whole.Offset == 0 && whole.Count == whole.Array!.Length
            ? whole.Array
            : Data.ToArray();
}

/// <summary>Where <see cref="JournalRecords.WriteEvents"/> puts a framed record's bytes, in order.</summary>
internal interface IJournalOutput
{
    /// <summary>The next <paramref name="bytes"/> of the record.</summary>
    void Write(ReadOnlySpan<byte> bytes);
}

/// <summary>
/// The on-disk framing of a journal file (all integers little endian; the file is ours alone):
/// <code>
/// file   = magic "Q2AJRNL1" (8 bytes), record*
/// record = length u32 (of payload) | crc u32 (CRC-32C over the length bytes and the payload) | payload
/// payload, kind 1 (events: one AtomicWrite, so a torn write drops all of it or none)
///        = 1 u8 | firstSeq i64 | lastSeq i64 | count i32 | event*
/// event  = seq i64 | timestamp i64 | serializerId i32 | serializerManifest str | manifest str | writerGuid str | data (i32 length + bytes)
/// payload, kind 2 (deletion mark, first record of a compacted file)
///        = 2 u8 | deletedTo i64 | highestSeq i64
/// str    = i32 UTF-8 byte length, bytes
/// </code>
/// CRC-32C (Castagnoli) rather than the zlib CRC-32: it is what storage formats use
/// (ext4, btrfs, iSCSI) for its better error detection on short records, and
/// System.IO.Hashing's <c>Crc32ParameterSet.Crc32C</c> computes it with the SSE4.2/ARMv8 CRC instructions.
/// </summary>
internal static class JournalRecords
{
    public static ReadOnlySpan<byte> Magic => "Q2AJRNL1"u8;

    public const int FrameHeaderLength = 8;
    public const byte EventsKind = 1;
    public const byte DeleteMarkKind = 2;
    public const int EventsHeaderLength = 1 + 8 + 8 + 4;
    public const int DeleteMarkLength = 1 + 8 + 8;

    public static uint Checksum(ReadOnlySpan<byte> lengthBytes, ReadOnlySpan<byte> payload)
    {
        var crc = new Crc32(Crc32ParameterSet.Crc32C);
        crc.Append(lengthBytes);
        crc.Append(payload);
        return crc.GetCurrentHashAsUInt32();
    }

    /// <summary>Bytes of the payload of one events record for <paramref name="events"/> (frame header not included).</summary>
    public static long EventsPayloadLength(IReadOnlyList<StoredEvent> events)
    {
        long size = EventsHeaderLength;
        foreach (var e in events)
            size += EventHeaderLength + StrSize(e.SerializerManifest) + StrSize(e.Manifest) + StrSize(e.WriterGuid) + 4 + e.Data.Length;
        return size;
    }

    /// <summary>
    /// Writes one framed events record for <paramref name="events"/> (in sequence order; <paramref name="payloadLength"/>
    /// from <see cref="EventsPayloadLength"/>) to <paramref name="output"/>. The events' data goes out from the buffers
    /// it is in, never copied into one record-sized array; the checksum is taken over each piece as it is written, and
    /// the frame header, which holds it, is filled in last (before the append's fdatasync).
    /// </summary>
    public static void WriteEvents(JournalAppendWriter output, IReadOnlyList<StoredEvent> events, int payloadLength)
    {
        long frameAt = output.Reserve(FrameHeaderLength);
        Span<byte> frame = stackalloc byte[FrameHeaderLength];
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)payloadLength);
        var crc = new Crc32(Crc32ParameterSet.Crc32C);
        crc.Append(frame[..4]);
        WritePayload(new ChecksummedOutput(output, crc), events);
        BinaryPrimitives.WriteUInt32LittleEndian(frame[4..], crc.GetCurrentHashAsUInt32());
        output.Patch(frameAt, frame);
    }

    private const int EventHeaderLength = 8 + 8 + 4;

    private static void WritePayload(IJournalOutput output, IReadOnlyList<StoredEvent> events)
    {
        Span<byte> head = stackalloc byte[EventsHeaderLength];
        head[0] = EventsKind;
        BinaryPrimitives.WriteInt64LittleEndian(head[1..], events[0].SequenceNr);
        BinaryPrimitives.WriteInt64LittleEndian(head[9..], events[^1].SequenceNr);
        BinaryPrimitives.WriteInt32LittleEndian(head[17..], events.Count);
        output.Write(head);
        Span<byte> field = stackalloc byte[EventHeaderLength];
        foreach (var e in events)
        {
            BinaryPrimitives.WriteInt64LittleEndian(field, e.SequenceNr);
            BinaryPrimitives.WriteInt64LittleEndian(field[8..], e.Timestamp);
            BinaryPrimitives.WriteInt32LittleEndian(field[16..], e.SerializerId);
            output.Write(field);
            WriteStr(output, e.SerializerManifest);
            WriteStr(output, e.Manifest);
            WriteStr(output, e.WriterGuid);
            BinaryPrimitives.WriteInt32LittleEndian(field, checked((int)e.Data.Length));
            output.Write(field[..4]);
            foreach (var segment in e.Data) output.Write(segment.Span);
        }
    }

    private static void WriteStr(IJournalOutput output, string s)
    {
        int size = StrSize(s);
        Span<byte> bytes = size <= 256 ? stackalloc byte[256] : new byte[size];
        WriteStr(bytes, s);
        output.Write(bytes[..size]);
    }

    // Every byte written is the byte checksummed: one pass over the data, never two that could disagree.
    private sealed class ChecksummedOutput(IJournalOutput inner, Crc32 crc) : IJournalOutput
    {
        public void Write(ReadOnlySpan<byte> bytes)
        {
            crc.Append(bytes);
            inner.Write(bytes);
        }
    }

    /// <summary>Appends one framed deletion mark.</summary>
    public static void WriteDeleteMark(ArrayBufferWriter<byte> output, long deletedTo, long highest)
    {
        var frame = output.GetSpan(FrameHeaderLength + DeleteMarkLength)[..(FrameHeaderLength + DeleteMarkLength)];
        var p = frame[FrameHeaderLength..];
        p[0] = DeleteMarkKind;
        BinaryPrimitives.WriteInt64LittleEndian(p[1..], deletedTo);
        BinaryPrimitives.WriteInt64LittleEndian(p[9..], highest);
        Frame(frame, DeleteMarkLength);
        output.Advance(frame.Length);
    }

    private static void Frame(Span<byte> frame, int payloadLength)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)payloadLength);
        BinaryPrimitives.WriteUInt32LittleEndian(frame[4..], Checksum(frame[..4], frame[FrameHeaderLength..]));
    }

    /// <summary>Decodes the events of a verified events payload.</summary>
    public static IEnumerable<StoredEvent> ReadEvents(byte[] payload, int length)
    {
        var count = BinaryPrimitives.ReadInt32LittleEndian(payload.AsSpan(17));
        var at = EventsHeaderLength;
        for (var i = 0; i < count; i++)
        {
            var seq = BinaryPrimitives.ReadInt64LittleEndian(payload.AsSpan(at));
            var ts = BinaryPrimitives.ReadInt64LittleEndian(payload.AsSpan(at + 8));
            var serializerId = BinaryPrimitives.ReadInt32LittleEndian(payload.AsSpan(at + 16));
            at += 20;
            var serializerManifest = ReadStr(payload, length, ref at);
            var manifest = ReadStr(payload, length, ref at);
            var writer = ReadStr(payload, length, ref at);
            var dataLength = BinaryPrimitives.ReadInt32LittleEndian(payload.AsSpan(at, 4));
            if (dataLength < 0 || at + 4 + dataLength > length) throw new InvalidDataException("journal event data overruns its record");
            var data = payload.AsSpan(at + 4, dataLength).ToArray();
            at += 4 + dataLength;
            yield return new StoredEvent(seq, ts, serializerId, serializerManifest, manifest, writer, data);
        }
    }

    private static int StrSize(string s) => 4 + Encoding.UTF8.GetByteCount(s);

    private static int WriteStr(Span<byte> dst, string s)
    {
        var n = Encoding.UTF8.GetBytes(s, dst[4..]);
        BinaryPrimitives.WriteInt32LittleEndian(dst, n);
        return 4 + n;
    }

    private static string ReadStr(byte[] payload, int length, ref int at)
    {
        var n = BinaryPrimitives.ReadInt32LittleEndian(payload.AsSpan(at, 4));
        if (n < 0 || at + 4 + n > length) throw new InvalidDataException("journal event string overruns its record");
        var s = Encoding.UTF8.GetString(payload, at + 4, n);
        at += 4 + n;
        return s;
    }
}
