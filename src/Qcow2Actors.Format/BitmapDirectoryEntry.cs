using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>Flags of a bitmap directory entry.</summary>
[Flags]
public enum BitmapFlags : uint
{
    /// <summary>No flags.</summary>
    None = 0,
    /// <summary>Bit 0: the bitmap is being modified and may be inconsistent.</summary>
    InUse = 1u << 0,
    /// <summary>Bit 1: the bitmap tracks writes automatically.</summary>
    Auto = 1u << 1,
    /// <summary>Bit 2: unknown extra data may be ignored.</summary>
    ExtraDataCompatible = 1u << 2,
    /// <summary>Bits 3-31, which must be zero.</summary>
    Reserved = ~(InUse | Auto | ExtraDataCompatible),
}

/// <summary>One bitmap directory entry (FORMAT.md §9), padded to 8 bytes on disk.</summary>
public sealed class BitmapDirectoryEntry
{
    /// <summary>Offset of bitmap_table_offset (u64).</summary>
    public const int TableOffsetOffset = 0;
    /// <summary>Offset of bitmap_table_size (u32, entries).</summary>
    public const int TableSizeOffset = 8;
    /// <summary>Offset of flags (u32).</summary>
    public const int FlagsOffset = 12;
    /// <summary>Offset of type (u8).</summary>
    public const int TypeOffset = 16;
    /// <summary>Offset of granularity_bits (u8).</summary>
    public const int GranularityBitsOffset = 17;
    /// <summary>Offset of name_size (u16).</summary>
    public const int NameSizeOffset = 18;
    /// <summary>Offset of extra_data_size (u32).</summary>
    public const int ExtraDataSizeOffset = 20;
    /// <summary>Size of the fixed part.</summary>
    public const int FixedSize = 24;
    /// <summary>The only bitmap type: dirty tracking.</summary>
    public const byte DirtyTrackingType = 1;
    /// <summary>QEMU's limit on name_size.</summary>
    public const int MaxNameSize = 1023;
    /// <summary>QEMU's smallest granularity_bits.</summary>
    public const int MinGranularityBits = 9;
    /// <summary>QEMU's largest granularity_bits.</summary>
    public const int MaxGranularityBits = 31;
    /// <summary>QEMU's limit on bitmap_table_size.</summary>
    public const int MaxTableSize = 0x8000000;
    /// <summary>QEMU's limit on a bitmap's data (bitmap_table_size clusters, 512 MiB), which bounds the memory it takes.</summary>
    public const long MaxDataSize = 0x20000000;

    private byte[] _extraData = [];

    /// <summary>Host offset of the bitmap table (cluster aligned).</summary>
    public long TableOffset { get; set; }
    /// <summary>Entries in the bitmap table.</summary>
    public int TableSize { get; set; }
    /// <summary>Flags.</summary>
    public BitmapFlags Flags { get; set; }
    /// <summary>Bitmap type (1 = dirty tracking).</summary>
    public byte Type { get; set; } = DirtyTrackingType;
    /// <summary>log2 of the bytes of disk each bit covers.</summary>
    public byte GranularityBits { get; set; } = 16;
    /// <summary>Unique bitmap name.</summary>
    public string Name { get; set; } = "";
    /// <summary>Extra data (none defined today), kept verbatim.</summary>
    public byte[] ExtraData
    {
        get => _extraData;
        set => _extraData = value ?? [];
    }

    /// <summary>Bytes the entry occupies on disk, padding included.</summary>
    public int EncodedSize => (FixedSize + _extraData.Length + Strings.Encode(Name, "bitmap name").Length + 7) & ~7;

    /// <summary>Whether the bitmap may be used: unknown extra data is acceptable only with the extra_data_compatible flag.</summary>
    public bool IsUsable => _extraData.Length == 0 || (Flags & BitmapFlags.ExtraDataCompatible) != 0;

    /// <summary>Describes what QEMU would reject in the entry (type, granularity, table size and offset), or null.</summary>
    /// <param name="clusterBits">Cluster bits of the image.</param>
    public string? Validate(int clusterBits)
    {
        if (Type != DirtyTrackingType) return $"bitmap '{Name}' has unknown type {Type}";
        if (GranularityBits is < MinGranularityBits or > MaxGranularityBits) return $"bitmap '{Name}' granularity_bits {GranularityBits} outside {MinGranularityBits}..{MaxGranularityBits}";
        if (TableSize == 0 || TableOffset == 0) return $"bitmap '{Name}' has no bitmap table";
        if ((uint)TableSize > MaxTableSize) return $"bitmap '{Name}' table size {TableSize} exceeds {MaxTableSize}";
        if ((long)TableSize << clusterBits > MaxDataSize)
            return $"bitmap '{Name}' data of {(long)TableSize << clusterBits} bytes exceeds the {MaxDataSize}-byte limit";
        if ((TableOffset & ((1L << clusterBits) - 1)) != 0) return $"bitmap '{Name}' table offset 0x{TableOffset:X} is not cluster aligned";
        return null;
    }

    /// <summary>Decodes the fixed part's fields without judging them; name and extra data are left to the caller.</summary>
    internal static BitmapDirectoryEntry DecodeFields(ReadOnlySpan<byte> data, out ulong tableOffset, out uint tableSize, out uint extra, out int nameSize)
    {
        tableOffset = BinaryPrimitives.ReadUInt64BigEndian(data[TableOffsetOffset..]);
        tableSize = BinaryPrimitives.ReadUInt32BigEndian(data[TableSizeOffset..]);
        nameSize = BinaryPrimitives.ReadUInt16BigEndian(data[NameSizeOffset..]);
        extra = BinaryPrimitives.ReadUInt32BigEndian(data[ExtraDataSizeOffset..]);
        return new BitmapDirectoryEntry
        {
            TableOffset = (long)tableOffset,
            TableSize = (int)Math.Min(tableSize, int.MaxValue),
            Flags = (BitmapFlags)BinaryPrimitives.ReadUInt32BigEndian(data[FlagsOffset..]),
            Type = data[TypeOffset],
            GranularityBits = data[GranularityBitsOffset],
        };
    }

    /// <summary>Decodes one entry and returns the bytes it occupies including padding.</summary>
    /// <param name="data">Bytes from the entry's start to the end of the directory.</param>
    /// <param name="baseOffset">File offset of the entry for error messages.</param>
    /// <param name="entry">The decoded entry.</param>
    /// <exception cref="Qcow2FormatException">Truncated, reserved flags, bad name.</exception>
    public static int Read(ReadOnlySpan<byte> data, long baseOffset, out BitmapDirectoryEntry entry)
    {
        if (data.Length < FixedSize)
            throw new Qcow2FormatException(Qcow2Rule.BitmapEntryTruncated, "bitmap directory", baseOffset, $"entry needs {FixedSize} bytes, only {data.Length} left", (ulong)data.Length);
        var e = DecodeFields(data, out ulong tableOffset, out uint tableSize, out uint extra, out int nameSize);
        if (tableOffset > long.MaxValue)
            throw new Qcow2FormatException(Qcow2Rule.BitmapEntryInvalid, "bitmap_table_offset", baseOffset + TableOffsetOffset, $"0x{tableOffset:X} exceeds INT64_MAX", tableOffset);
        if (tableSize > int.MaxValue)
            throw new Qcow2FormatException(Qcow2Rule.BitmapEntryInvalid, "bitmap_table_size", baseOffset + TableSizeOffset, $"{tableSize} entries exceed {MaxTableSize}", tableSize);
        if ((e.Flags & BitmapFlags.Reserved) != 0)
            throw new Qcow2FormatException(Qcow2Rule.BitmapEntryInvalid, "bitmap flags", baseOffset + FlagsOffset, $"reserved bits 0x{(uint)(e.Flags & BitmapFlags.Reserved):X8} set", (ulong)e.Flags);
        if (nameSize == 0 || nameSize > MaxNameSize)
            throw new Qcow2FormatException(Qcow2Rule.BitmapEntryInvalid, "bitmap name_size", baseOffset + NameSizeOffset, $"{nameSize} is outside 1..{MaxNameSize}", (ulong)nameSize);
        if (extra > (uint)(data.Length - FixedSize - nameSize))
            throw new Qcow2FormatException(Qcow2Rule.BitmapEntryTruncated, "bitmap extra_data_size", baseOffset + ExtraDataSizeOffset, $"{extra} bytes run past the end of the directory", extra);
        int at = FixedSize + (int)extra;
        e._extraData = data.Slice(FixedSize, (int)extra).ToArray();
        e.Name = Strings.Decode(data.Slice(at, nameSize), "bitmap name", baseOffset + at);
        int padded = (at + nameSize + 7) & ~7;
        if (padded > data.Length)
            throw new Qcow2FormatException(Qcow2Rule.BitmapEntryTruncated, "bitmap directory", baseOffset, $"entry padded to {padded} bytes runs past the end of the directory", (ulong)padded);
        entry = e;
        return padded;
    }

    /// <summary>Encodes the entry with zero padding to 8.</summary>
    /// <param name="destination">At least <see cref="EncodedSize"/> bytes.</param>
    /// <returns>Bytes written, padding included.</returns>
    public int Write(Span<byte> destination)
    {
        byte[] name = Strings.Encode(Name, "bitmap name");
        if (name.Length is 0 or > MaxNameSize) throw new InvalidOperationException($"bitmap name must be 1..{MaxNameSize} bytes");
        int size = EncodedSize;
        if (destination.Length < size) throw new ArgumentException($"the bitmap directory entry needs {size} bytes", nameof(destination));
        var d = destination[..size];
        d.Clear();
        BinaryPrimitives.WriteUInt64BigEndian(d[TableOffsetOffset..], (ulong)TableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(d[TableSizeOffset..], (uint)TableSize);
        BinaryPrimitives.WriteUInt32BigEndian(d[FlagsOffset..], (uint)Flags);
        d[TypeOffset] = Type;
        d[GranularityBitsOffset] = GranularityBits;
        BinaryPrimitives.WriteUInt16BigEndian(d[NameSizeOffset..], (ushort)name.Length);
        BinaryPrimitives.WriteUInt32BigEndian(d[ExtraDataSizeOffset..], (uint)_extraData.Length);
        _extraData.CopyTo(d[FixedSize..]);
        name.CopyTo(d[(FixedSize + _extraData.Length)..]);
        return size;
    }
}
