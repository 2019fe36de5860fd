using System.Buffers.Binary;

namespace Qcow2Actors.Format;

/// <summary>
/// One internal snapshot table entry (FORMAT.md §8): a 40-byte fixed part, extra data (QEMU
/// writes 24 known bytes: VM state size, disk size, icount), the ID and the name, padded to 8.
/// </summary>
public sealed class SnapshotEntry
{
    /// <summary>Offset of the snapshot's L1 table offset (u64).</summary>
    public const int L1TableOffsetOffset = 0;
    /// <summary>Offset of the snapshot's L1 size (u32).</summary>
    public const int L1SizeOffset = 8;
    /// <summary>Offset of id_str_size (u16).</summary>
    public const int IdSizeOffset = 12;
    /// <summary>Offset of name_size (u16).</summary>
    public const int NameSizeOffset = 14;
    /// <summary>Offset of date_sec (u32).</summary>
    public const int DateSecondsOffset = 16;
    /// <summary>Offset of date_nsec (u32).</summary>
    public const int DateNanosecondsOffset = 20;
    /// <summary>Offset of vm_clock_nsec (u64).</summary>
    public const int VmClockOffset = 24;
    /// <summary>Offset of the 32-bit vm_state_size.</summary>
    public const int VmStateSize32Offset = 32;
    /// <summary>Offset of extra_data_size (u32).</summary>
    public const int ExtraDataSizeOffset = 36;
    /// <summary>Size of the fixed part; extra data starts here.</summary>
    public const int FixedSize = 40;
    /// <summary>Offset within the extra data of the 64-bit VM state size.</summary>
    public const int ExtraVmStateSizeOffset = 0;
    /// <summary>Offset within the extra data of the virtual disk size.</summary>
    public const int ExtraDiskSizeOffset = 8;
    /// <summary>Offset within the extra data of icount.</summary>
    public const int ExtraIcountOffset = 16;
    /// <summary>Extra data bytes this version understands (and always writes).</summary>
    public const int KnownExtraSize = 24;
    /// <summary>QEMU's limit on extra_data_size.</summary>
    public const int MaxExtraDataSize = 1024;
    /// <summary>Smallest extra_data_size in a v3 image (VM state size and disk size are mandatory).</summary>
    public const int MinV3ExtraDataSize = 16;

    private byte[] _unknownExtraData = [];

    /// <summary>Host offset of the snapshot's L1 table.</summary>
    public long L1TableOffset { get; set; }
    /// <summary>Entries in the snapshot's L1 table.</summary>
    public int L1Size { get; set; }
    /// <summary>Unique ID (a decimal string in QEMU).</summary>
    public string Id { get; set; } = "";
    /// <summary>Snapshot name.</summary>
    public string Name { get; set; } = "";
    /// <summary>Creation time, seconds since the epoch.</summary>
    public uint DateSeconds { get; set; }
    /// <summary>Creation time, nanoseconds part.</summary>
    public uint DateNanoseconds { get; set; }
    /// <summary>Guest run time in nanoseconds.</summary>
    public ulong VmClockNanoseconds { get; set; }
    /// <summary>VM state size in bytes (from extra bytes 0-7 when present, else the 32-bit field).</summary>
    public ulong VmStateSize { get; set; }
    /// <summary>Virtual disk size at snapshot time; null when the entry did not record it (then it is the current size).</summary>
    public long? DiskSize { get; set; }
    /// <summary>Guest instruction count (−1 when not recorded by record/replay); null when the entry is too old to have it.</summary>
    public long? Icount { get; set; }
    /// <summary>extra_data_size as stored when the entry was read (0 for a new entry; writing always stores 24 plus the unknown bytes).</summary>
    public uint ExtraDataSize { get; set; }
    /// <summary>Extra data beyond the 24 known bytes, kept verbatim.</summary>
    public byte[] UnknownExtraData
    {
        get => _unknownExtraData;
        set => _unknownExtraData = value ?? [];
    }

    /// <summary>Bytes this entry occupies when written (not padded).</summary>
    public int EncodedSize => FixedSize + KnownExtraSize + _unknownExtraData.Length
        + Strings.Encode(Id, "snapshot id").Length + Strings.Encode(Name, "snapshot name").Length;

    /// <summary>Describes what is wrong for use (misaligned L1, oversized L1), or null.</summary>
    /// <param name="clusterBits">Cluster bits of the image.</param>
    public string? Validate(int clusterBits)
    {
        if ((L1TableOffset & ((1L << clusterBits) - 1)) != 0) return $"snapshot {Id} L1 table offset 0x{L1TableOffset:X} is not cluster aligned";
        if ((uint)L1Size > Qcow2Header.MaxL1Size) return $"snapshot {Id} L1 size {L1Size} exceeds QEMU's limit of {Qcow2Header.MaxL1Size}";
        return null;
    }

    /// <summary>A deep copy.</summary>
    public SnapshotEntry Clone()
    {
        var c = (SnapshotEntry)MemberwiseClone();
        c._unknownExtraData = (byte[])_unknownExtraData.Clone();
        return c;
    }

    /// <summary>
    /// Bytes an entry occupies as stored, from its own size fields (fixed part, extra data, id and
    /// name; without the padding to 8 that follows it). No validation: for code that only skips entries
    /// of a table <see cref="SnapshotTable"/> has already read.
    /// </summary>
    /// <param name="entry">The entry's bytes, at least <see cref="FixedSize"/> of them.</param>
    public static long StoredSize(ReadOnlySpan<byte> entry) =>
        FixedSize
        + (long)BinaryPrimitives.ReadUInt32BigEndian(entry[ExtraDataSizeOffset..])
        + BinaryPrimitives.ReadUInt16BigEndian(entry[IdSizeOffset..])
        + BinaryPrimitives.ReadUInt16BigEndian(entry[NameSizeOffset..]);

    /// <summary>
    /// Decodes one entry at the start of <paramref name="data"/> and returns the bytes it used
    /// (without padding).
    /// </summary>
    /// <param name="data">Bytes from the entry's start.</param>
    /// <param name="version">Image version (v3 requires at least 16 extra bytes).</param>
    /// <param name="baseOffset">File offset of the entry for error messages.</param>
    /// <param name="entry">The decoded entry.</param>
    /// <exception cref="Qcow2FormatException">Truncated, too much extra data, too little extra data for v3, bad strings.</exception>
    public static int Read(ReadOnlySpan<byte> data, int version, long baseOffset, out SnapshotEntry entry) =>
        Read(data, version, baseOffset, ValidationProfile.Open, -1, out entry);

    /// <summary>
    /// Decodes entry <paramref name="index"/> as <see cref="Read(ReadOnlySpan{byte}, int, long, out SnapshotEntry)"/>
    /// does. Outside <see cref="ValidationProfile.Open"/> it keeps what QEMU keeps: a v3 entry with
    /// too little extra data (the checker reports it), names cut at NUL, out-of-range offsets as stored.
    /// </summary>
    /// <param name="data">Bytes from the entry's start.</param>
    /// <param name="version">Image version.</param>
    /// <param name="baseOffset">File offset of the entry for error messages.</param>
    /// <param name="profile">Who reads.</param>
    /// <param name="index">The entry's index in the table, for error reports (-1 when unknown).</param>
    /// <param name="entry">The decoded entry.</param>
    /// <returns>Bytes the entry used, without padding.</returns>
    /// <exception cref="Qcow2FormatException">The entry breaks a rule of <paramref name="profile"/>.</exception>
    public static int Read(ReadOnlySpan<byte> data, int version, long baseOffset, ValidationProfile profile, int index, out SnapshotEntry entry)
    {
        bool strict = profile == ValidationProfile.Open;
        if (data.Length < FixedSize)
            throw new Qcow2FormatException(Qcow2Rule.SnapshotEntryTruncated, "snapshot table", baseOffset, $"entry header needs {FixedSize} bytes, only {data.Length} left", (ulong)data.Length, index);
        uint extra = BinaryPrimitives.ReadUInt32BigEndian(data[ExtraDataSizeOffset..]);
        if (extra > MaxExtraDataSize)
            throw new Qcow2FormatException(Qcow2Rule.SnapshotExtraDataTooLarge, "extra_data_size", baseOffset + ExtraDataSizeOffset, $"{extra} bytes exceed QEMU's limit of {MaxExtraDataSize}", extra, index);
        if (strict && version >= 3 && extra < MinV3ExtraDataSize)
            throw new Qcow2FormatException(Qcow2Rule.SnapshotExtraDataTooSmall, "extra_data_size", baseOffset + ExtraDataSizeOffset, $"{extra} bytes are fewer than the {MinV3ExtraDataSize} a version 3 snapshot needs", extra, index);
        int idSize = BinaryPrimitives.ReadUInt16BigEndian(data[IdSizeOffset..]);
        int nameSize = BinaryPrimitives.ReadUInt16BigEndian(data[NameSizeOffset..]);
        int total = FixedSize + (int)extra + idSize + nameSize;
        if (data.Length < total)
            throw new Qcow2FormatException(Qcow2Rule.SnapshotEntryTruncated, "snapshot table", baseOffset, $"entry needs {total} bytes, only {data.Length} left", (ulong)data.Length, index);

        ulong l1Offset = BinaryPrimitives.ReadUInt64BigEndian(data[L1TableOffsetOffset..]);
        var e = new SnapshotEntry
        {
            L1TableOffset = (long)l1Offset,
            L1Size = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(data[L1SizeOffset..]), int.MaxValue),
            DateSeconds = BinaryPrimitives.ReadUInt32BigEndian(data[DateSecondsOffset..]),
            DateNanoseconds = BinaryPrimitives.ReadUInt32BigEndian(data[DateNanosecondsOffset..]),
            VmClockNanoseconds = BinaryPrimitives.ReadUInt64BigEndian(data[VmClockOffset..]),
            VmStateSize = BinaryPrimitives.ReadUInt32BigEndian(data[VmStateSize32Offset..]),
            ExtraDataSize = extra,
        };
        if (strict && l1Offset > long.MaxValue)
            throw new Qcow2FormatException(Qcow2Rule.SnapshotFieldOutOfRange, "snapshot l1_table_offset", baseOffset + L1TableOffsetOffset, "exceeds INT64_MAX", l1Offset, index);
        var x = data.Slice(FixedSize, (int)extra);
        if (extra >= ExtraVmStateSizeOffset + 8) e.VmStateSize = BinaryPrimitives.ReadUInt64BigEndian(x[ExtraVmStateSizeOffset..]);
        if (extra >= ExtraDiskSizeOffset + 8)
        {
            ulong disk = BinaryPrimitives.ReadUInt64BigEndian(x[ExtraDiskSizeOffset..]);
            if (disk > long.MaxValue && strict)
                throw new Qcow2FormatException(Qcow2Rule.SnapshotFieldOutOfRange, "snapshot disk size", baseOffset + FixedSize + ExtraDiskSizeOffset, $"{disk} exceeds INT64_MAX", disk, index);
            e.DiskSize = disk > long.MaxValue ? null : (long)disk;
        }
        if (extra >= ExtraIcountOffset + 8) e.Icount = BinaryPrimitives.ReadInt64BigEndian(x[ExtraIcountOffset..]);
        if (extra > KnownExtraSize) e._unknownExtraData = x[KnownExtraSize..].ToArray();
        int at = FixedSize + (int)extra;
        e.Id = Strings.Decode(data.Slice(at, idSize), "snapshot id", baseOffset + at, profile);
        e.Name = Strings.Decode(data.Slice(at + idSize, nameSize), "snapshot name", baseOffset + at + idSize, profile);
        entry = e;
        return total;
    }

    /// <summary>
    /// Encodes the entry the way QEMU does: 24 known extra bytes plus the unknown ones, the 32-bit
    /// VM state size 0 when the size does not fit.
    /// </summary>
    /// <param name="destination">At least <see cref="EncodedSize"/> bytes.</param>
    /// <returns>Bytes written (no padding).</returns>
    /// <exception cref="InvalidOperationException"><see cref="DiskSize"/> is null, or a field is out of range.</exception>
    public int Write(Span<byte> destination)
    {
        if (DiskSize is null) throw new InvalidOperationException($"snapshot {Id}: set DiskSize before writing");
        byte[] id = Strings.Encode(Id, "snapshot id");
        byte[] name = Strings.Encode(Name, "snapshot name");
        if (id.Length > ushort.MaxValue || name.Length > ushort.MaxValue)
            throw new InvalidOperationException($"snapshot {Id}: id or name longer than 65535 bytes");
        int extra = KnownExtraSize + _unknownExtraData.Length;
        if (extra > MaxExtraDataSize) throw new InvalidOperationException($"snapshot {Id}: {extra} bytes of extra data exceed {MaxExtraDataSize}");
        int total = FixedSize + extra + id.Length + name.Length;
        if (destination.Length < total) throw new ArgumentException($"the snapshot entry needs {total} bytes", nameof(destination));
        var d = destination[..total];
        d.Clear();
        BinaryPrimitives.WriteUInt64BigEndian(d[L1TableOffsetOffset..], (ulong)L1TableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(d[L1SizeOffset..], (uint)L1Size);
        BinaryPrimitives.WriteUInt16BigEndian(d[IdSizeOffset..], (ushort)id.Length);
        BinaryPrimitives.WriteUInt16BigEndian(d[NameSizeOffset..], (ushort)name.Length);
        BinaryPrimitives.WriteUInt32BigEndian(d[DateSecondsOffset..], DateSeconds);
        BinaryPrimitives.WriteUInt32BigEndian(d[DateNanosecondsOffset..], DateNanoseconds);
        BinaryPrimitives.WriteUInt64BigEndian(d[VmClockOffset..], VmClockNanoseconds);
        BinaryPrimitives.WriteUInt32BigEndian(d[VmStateSize32Offset..], VmStateSize > uint.MaxValue ? 0 : (uint)VmStateSize);
        BinaryPrimitives.WriteUInt32BigEndian(d[ExtraDataSizeOffset..], (uint)extra);
        var x = d.Slice(FixedSize, extra);
        BinaryPrimitives.WriteUInt64BigEndian(x[ExtraVmStateSizeOffset..], VmStateSize);
        BinaryPrimitives.WriteUInt64BigEndian(x[ExtraDiskSizeOffset..], (ulong)DiskSize.Value);
        BinaryPrimitives.WriteInt64BigEndian(x[ExtraIcountOffset..], Icount ?? -1);
        _unknownExtraData.CopyTo(x[KnownExtraSize..]);
        id.CopyTo(d[(FixedSize + extra)..]);
        name.CopyTo(d[(FixedSize + extra + id.Length)..]);
        return total;
    }
}
