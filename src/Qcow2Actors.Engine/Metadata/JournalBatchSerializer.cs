using System.Buffers;
using System.Buffers.Binary;
using Akka.Actor;
using Akka.Serialization;
using Qcow2Actors.Engine.Journal;

namespace Qcow2Actors.Engine.Metadata;

/// <summary>
/// Compact binary form of <see cref="JournalBatch"/> (a tag byte and fixed-width big-endian
/// fields per record), so a batch of thousands of records costs a few bytes each and no
/// reflection. Bound in the engine's reference HOCON. Internal: Akka resolves it by its type name
/// there and creates it by reflection (a public constructor on an internal type is enough).
/// </summary>
internal sealed class JournalBatchSerializer : Serializer, ISequenceSerializer
{
    /// <summary>Serializer id registered in HOCON; unique among Akka serializers (Akka reserves 0-100).</summary>
    public const int Id = 0x51324A01;

    private const byte TagL1 = 1, TagL2 = 2, TagRefcount = 3, TagRefTable = 4, TagNewTable = 5, TagHeader = 6;
    // Bitmap evidence (variable length): older journals have none, and an older reader refuses them by tag.
    private const byte TagBitmapRanges = 7, TagBitmapTracked = 8;
    private const int RangeBytes = 16;
    private const int Version = 1;

    /// <summary>Creates the serializer for an actor system (Akka's constructor contract).</summary>
    public JournalBatchSerializer(ExtendedActorSystem system) : base(system) { }

    /// <inheritdoc />
    public override int Identifier => Id;

    /// <inheritdoc />
    public override bool IncludeManifest => false;

    /// <inheritdoc />
    public override byte[] ToBinary(object obj) => obj switch
    {
        JournalBatch batch => Encode(batch),
        PendingJournalBatch pending => pending.ToSequence().ToArray(),
        _ => throw new ArgumentException($"cannot serialize {obj.GetType()}", nameof(obj)),
    };

    /// <inheritdoc />
    public ReadOnlySequence<byte> ToSequence(object obj) =>
        obj is PendingJournalBatch pending ? pending.ToSequence() : new ReadOnlySequence<byte>(ToBinary(obj));

    /// <inheritdoc />
    public override object FromBinary(byte[] bytes, Type type) => Decode(bytes);

    /// <summary>Encodes a batch; public for tests and tools that read journals offline.</summary>
    public static byte[] Encode(JournalBatch batch)
    {
        var size = HeaderLength;
        foreach (var r in batch.Records) size += RecordLength(r);
        var buffer = new byte[size];
        WriteHeader(buffer, batch.Records.Count);
        var pos = HeaderLength;
        foreach (var r in batch.Records) pos += WriteRecord(buffer.AsSpan(pos), r);
        return buffer;
    }

    /// <summary>Bytes of the batch header (version, record count) in front of the records.</summary>
    public const int HeaderLength = 8;

    /// <summary>Writes the batch header for <paramref name="count"/> records.</summary>
    public static void WriteHeader(Span<byte> destination, int count)
    {
        BinaryPrimitives.WriteInt32BigEndian(destination, Version);
        BinaryPrimitives.WriteInt32BigEndian(destination[4..], count);
    }

    /// <summary>Bytes <paramref name="r"/> takes in a batch (its tag included).</summary>
    public static int RecordLength(MetadataRecord r) => 1 + SizeOf(r);

    /// <summary>Writes <paramref name="r"/> (tag, then fields) at the start of <paramref name="destination"/>; returns its <see cref="RecordLength"/>.</summary>
    public static int WriteRecord(Span<byte> destination, MetadataRecord r)
    {
        var s = destination[1..];
        switch (r)
        {
            case SetL1Entry e:
                destination[0] = TagL1; BinaryPrimitives.WriteInt32BigEndian(s, e.Index); BinaryPrimitives.WriteUInt64BigEndian(s[4..], e.Value);
                break;
            case SetL2Entry e:
                destination[0] = TagL2; BinaryPrimitives.WriteInt64BigEndian(s, e.TableOffset); BinaryPrimitives.WriteInt32BigEndian(s[8..], e.Index);
                BinaryPrimitives.WriteUInt64BigEndian(s[12..], e.Word0); BinaryPrimitives.WriteUInt64BigEndian(s[20..], e.Word1);
                break;
            case SetRefcount e:
                destination[0] = TagRefcount; BinaryPrimitives.WriteInt64BigEndian(s, e.Cluster); BinaryPrimitives.WriteUInt64BigEndian(s[8..], e.Value);
                break;
            case SetRefcountTableEntry e:
                destination[0] = TagRefTable; BinaryPrimitives.WriteInt32BigEndian(s, e.Index); BinaryPrimitives.WriteUInt64BigEndian(s[4..], e.Value);
                break;
            case NewTable e:
                destination[0] = TagNewTable; s[0] = (byte)e.Kind; BinaryPrimitives.WriteInt64BigEndian(s[1..], e.Offset); BinaryPrimitives.WriteInt64BigEndian(s[9..], e.Length);
                break;
            case SetHeaderField e:
                destination[0] = TagHeader; s[0] = (byte)e.Field; BinaryPrimitives.WriteUInt64BigEndian(s[1..], e.Value);
                break;
            case BitmapRangesSet e:
                destination[0] = TagBitmapRanges; BinaryPrimitives.WriteInt32BigEndian(s, e.Ranges.Count);
                for (int k = 0; k < e.Ranges.Count; k++)
                {
                    BinaryPrimitives.WriteInt64BigEndian(s[(4 + k * RangeBytes)..], e.Ranges[k].Offset);
                    BinaryPrimitives.WriteInt64BigEndian(s[(12 + k * RangeBytes)..], e.Ranges[k].Length);
                }
                break;
            case BitmapTracked e:
                destination[0] = TagBitmapTracked; BinaryPrimitives.WriteInt64BigEndian(s, e.TableOffset);
                int nameBytes = System.Text.Encoding.UTF8.GetBytes(e.Name, s[10..]);
                BinaryPrimitives.WriteUInt16BigEndian(s[8..], (ushort)nameBytes);
                break;
            default:
                throw new ArgumentException($"unknown record {r.GetType()}", nameof(r));
        }
        return RecordLength(r);
    }

    /// <summary>Decodes a batch, refusing truncated or unknown input with one clear line.</summary>
    public static JournalBatch Decode(ReadOnlySpan<byte> span)
    {
        if (span.Length < 8) throw new InvalidDataException("journal batch shorter than its 8-byte header");
        var version = BinaryPrimitives.ReadInt32BigEndian(span);
        if (version != Version) throw new InvalidDataException($"journal batch version {version} is not supported (expected {Version})");
        var count = BinaryPrimitives.ReadInt32BigEndian(span[4..]);
        if (count < 0 || count > (span.Length - 8)) throw new InvalidDataException($"journal batch claims {count} records in {span.Length} bytes");
        var records = new List<MetadataRecord>(count);
        var pos = 8;
        for (var i = 0; i < count; i++)
        {
            if (pos >= span.Length) throw new InvalidDataException($"journal batch truncated at record {i}");
            var tag = span[pos];
            var need = tag switch
            {
                TagL1 => 12, TagL2 => 28, TagRefcount => 16, TagRefTable => 12, TagNewTable => 17, TagHeader => 9,
                TagBitmapRanges => pos + 5 <= span.Length ? 4 + (long)BinaryPrimitives.ReadInt32BigEndian(span[(pos + 1)..]) * RangeBytes : 4,
                TagBitmapTracked => pos + 11 <= span.Length ? 10 + BinaryPrimitives.ReadUInt16BigEndian(span[(pos + 9)..]) : 10,
                _ => throw new InvalidDataException($"journal batch record {i} has unknown tag {tag}"),
            };
            if (need < 0) throw new InvalidDataException($"journal batch record {i} claims a negative length");
            if (pos + 1 + need > span.Length) throw new InvalidDataException($"journal batch truncated in record {i}");
            var s = span.Slice(pos + 1, (int)need);
            records.Add(tag switch
            {
                TagL1 => new SetL1Entry(BinaryPrimitives.ReadInt32BigEndian(s), BinaryPrimitives.ReadUInt64BigEndian(s[4..])),
                TagL2 => new SetL2Entry(BinaryPrimitives.ReadInt64BigEndian(s), BinaryPrimitives.ReadInt32BigEndian(s[8..]),
                    BinaryPrimitives.ReadUInt64BigEndian(s[12..]), BinaryPrimitives.ReadUInt64BigEndian(s[20..])),
                TagRefcount => new SetRefcount(BinaryPrimitives.ReadInt64BigEndian(s), BinaryPrimitives.ReadUInt64BigEndian(s[8..])),
                TagRefTable => new SetRefcountTableEntry(BinaryPrimitives.ReadInt32BigEndian(s), BinaryPrimitives.ReadUInt64BigEndian(s[4..])),
                TagNewTable => new NewTable((TableKind)s[0], BinaryPrimitives.ReadInt64BigEndian(s[1..]), BinaryPrimitives.ReadInt64BigEndian(s[9..])),
                TagBitmapRanges => DecodeRanges(s),
                TagBitmapTracked => new BitmapTracked(System.Text.Encoding.UTF8.GetString(s[10..]), BinaryPrimitives.ReadInt64BigEndian(s)),
                _ => new SetHeaderField((HeaderField)s[0], BinaryPrimitives.ReadUInt64BigEndian(s[1..])),
            });
            pos += 1 + (int)need;
        }
        return new JournalBatch(records);
    }

    private static BitmapRangesSet DecodeRanges(ReadOnlySpan<byte> s)
    {
        int count = BinaryPrimitives.ReadInt32BigEndian(s);
        var ranges = new (long, long)[count];
        for (int k = 0; k < count; k++)
            ranges[k] = (BinaryPrimitives.ReadInt64BigEndian(s[(4 + k * RangeBytes)..]), BinaryPrimitives.ReadInt64BigEndian(s[(12 + k * RangeBytes)..]));
        return new BitmapRangesSet(ranges);
    }

    private static int SizeOf(MetadataRecord r) => r switch
    {
        SetL1Entry => 12,
        SetL2Entry => 28,
        SetRefcount => 16,
        SetRefcountTableEntry => 12,
        NewTable => 17,
        SetHeaderField => 9,
        BitmapRangesSet e => 4 + e.Ranges.Count * RangeBytes,
        BitmapTracked e => 10 + System.Text.Encoding.UTF8.GetByteCount(e.Name),
        _ => throw new ArgumentException($"unknown record {r.GetType()}", nameof(r)),
    };
}
