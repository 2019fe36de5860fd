using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace Qcow2Actors.Engine.Journal;

/// <summary>One persisted event as the file stores it: already serialized by Akka's serialization.</summary>
internal sealed record StoredEvent(
    long SequenceNr,
    long Timestamp,
    int SerializerId,
    string SerializerManifest,
    string Manifest,
    string WriterGuid,
    byte[] Data);

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

    /// <summary>Appends one framed events record for <paramref name="events"/> (in sequence order).</summary>
    public static void WriteEvents(ArrayBufferWriter<byte> output, IReadOnlyList<StoredEvent> events)
    {
        var size = EventsHeaderLength;
        foreach (var e in events)
            size += 8 + 8 + 4 + StrSize(e.SerializerManifest) + StrSize(e.Manifest) + StrSize(e.WriterGuid) + 4 + e.Data.Length;
        var frame = output.GetSpan(FrameHeaderLength + size)[..(FrameHeaderLength + size)];
        var p = frame[FrameHeaderLength..];
        p[0] = EventsKind;
        BinaryPrimitives.WriteInt64LittleEndian(p[1..], events[0].SequenceNr);
        BinaryPrimitives.WriteInt64LittleEndian(p[9..], events[^1].SequenceNr);
        BinaryPrimitives.WriteInt32LittleEndian(p[17..], events.Count);
        var at = EventsHeaderLength;
        foreach (var e in events)
        {
            BinaryPrimitives.WriteInt64LittleEndian(p[at..], e.SequenceNr);
            BinaryPrimitives.WriteInt64LittleEndian(p[(at + 8)..], e.Timestamp);
            BinaryPrimitives.WriteInt32LittleEndian(p[(at + 16)..], e.SerializerId);
            at += 20;
            at += WriteStr(p[at..], e.SerializerManifest);
            at += WriteStr(p[at..], e.Manifest);
            at += WriteStr(p[at..], e.WriterGuid);
            BinaryPrimitives.WriteInt32LittleEndian(p[at..], e.Data.Length);
            e.Data.CopyTo(p[(at + 4)..]);
            at += 4 + e.Data.Length;
        }
        Frame(frame, size);
        output.Advance(frame.Length);
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
