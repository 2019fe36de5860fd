using CsCheck;
using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

public class SnapshotTableTests
{
    private static SnapshotEntry Sample(string id = "1", string name = "snap") => new()
    {
        L1TableOffset = 0x40000, L1Size = 2, Id = id, Name = name, DateSeconds = 1700000000, DateNanoseconds = 5,
        VmClockNanoseconds = 123456789, VmStateSize = 0, DiskSize = 1L << 30, Icount = -1,
    };

    private static byte[] Encode(IReadOnlyList<SnapshotEntry> entries)
    {
        var b = new byte[SnapshotTable.ComputeSize(entries)];
        SnapshotTable.Write(entries, b);
        return b;
    }

    [Fact]
    public void Entry_fields_sit_at_the_documented_offsets()
    {
        var b = Encode([Sample()]);
        Assert.Equal(Hex(
            "0000000000040000 00000002 0001 0004 6553F100 00000005 00000000075BCD15 00000000 00000018" +
            "0000000000000000 0000000040000000 FFFFFFFFFFFFFFFF" + "31" + "736E6170"), b);
    }

    [Fact]
    public void Entries_start_on_8_byte_boundaries_and_the_last_is_not_padded()
    {
        var entries = new[] { Sample("1", "a"), Sample("2", "bc") };
        // 40 + 24 + 1 + 1 = 66 → next at 72; 72 + 40 + 24 + 1 + 2 = 139.
        Assert.Equal(139, SnapshotTable.ComputeSize(entries));
        var b = Encode(entries);
        Assert.Equal(0, b[66]);
        Assert.Equal(0x40000UL, System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(b.AsSpan(72)));
        var r = SnapshotTable.Read(b, 2, 3);
        Assert.Equal(["1", "2"], r.Select(e => e.Id));
        Assert.Equal(["a", "bc"], r.Select(e => e.Name));
    }

    [Fact]
    public void Write_then_Read_round_trips_any_entries()
    {
        var gen = (
            from l1 in Gen.Long[0, 1L << 40]
            from l1Size in Gen.Int[0, 1 << 22]
            from id in Gen.String[Gen.Char['0', '9'], 1, 6]
            from name in Gen.String[Gen.Char['a', 'z'], 0, 40]
            from ds in Gen.UInt
            from dn in Gen.UInt
            from vc in Gen.ULong
            from vm in Gen.ULong
            from disk in Gen.Long[0, long.MaxValue]
            from icount in Gen.Long
            from unknown in Gen.Byte.Array[0, 64]
            select new SnapshotEntry
            {
                L1TableOffset = l1 << 9, L1Size = l1Size, Id = id, Name = name + "\u00e9",
                DateSeconds = ds, DateNanoseconds = dn, VmClockNanoseconds = vc, VmStateSize = vm, DiskSize = disk, Icount = icount,
                UnknownExtraData = unknown,
            }).Array[0, 5];
        gen.Sample(entries =>
        {
            var b = Encode(entries);
            var r = SnapshotTable.Read(b, entries.Length, 3, 0x50000);
            Assert.Equal(b, Encode(r));
            for (int i = 0; i < entries.Length; i++)
            {
                Assert.Equal(entries[i].VmStateSize, r[i].VmStateSize);
                Assert.Equal(entries[i].DiskSize, r[i].DiskSize);
                Assert.Equal(entries[i].Icount, r[i].Icount);
                Assert.Equal(entries[i].UnknownExtraData, r[i].UnknownExtraData);
                Assert.Equal(entries[i].Name, r[i].Name);
            }
        });
    }

    [Fact]
    public void A_large_VM_state_writes_0_in_the_32_bit_field_and_keeps_the_64_bit_one()
    {
        var s = Sample();
        s.VmStateSize = 5UL << 30;
        var b = Encode([s]);
        Assert.Equal(0u, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(SnapshotEntry.VmStateSize32Offset)));
        Assert.Equal(5UL << 30, SnapshotTable.Read(b, 1, 3)[0].VmStateSize);
    }

    [Fact]
    public void A_v2_entry_without_extra_data_uses_the_32_bit_VM_state_size()
    {
        var b = new byte[48];
        U32(b, SnapshotEntry.VmStateSize32Offset, 4096);
        U16(b, SnapshotEntry.IdSizeOffset, 1);
        b[40] = (byte)'7';
        var e = SnapshotTable.Read(b, 1, 2)[0];
        Assert.Equal(4096UL, e.VmStateSize);
        Assert.Null(e.DiskSize);
        Assert.Null(e.Icount);
        Assert.Equal("7", e.Id);
        Assert.Equal("", e.Name);
        Assert.Throws<InvalidOperationException>(() => Encode([e]));
    }

    [Fact]
    public void A_16_byte_extra_has_a_disk_size_but_no_icount()
    {
        var b = new byte[56];
        U32(b, SnapshotEntry.ExtraDataSizeOffset, 16);
        U64(b, 40, 7);
        U64(b, 48, 1 << 20);
        var e = SnapshotTable.Read(b, 1, 3)[0];
        Assert.Equal(7UL, e.VmStateSize);
        Assert.Equal(1 << 20, e.DiskSize);
        Assert.Null(e.Icount);
    }

    [Fact]
    public void Read_refuses_extra_data_above_1024_bytes()
    {
        var b = new byte[2000];
        U32(b, SnapshotEntry.ExtraDataSizeOffset, 1025);
        var e = Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(b, 1, 3, 0x30000));
        Assert.Equal("extra_data_size", e.Field);
        Assert.Equal(0x30000 + 36, e.Offset);
    }

    [Fact]
    public void Read_refuses_v3_entries_with_less_than_16_extra_bytes()
    {
        var b = new byte[64];
        U32(b, SnapshotEntry.ExtraDataSizeOffset, 8);
        Assert.Equal("extra_data_size", Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(b, 1, 3)).Field);
        Assert.Single(SnapshotTable.Read(b, 1, 2));
    }

    [Fact]
    public void Read_refuses_a_truncated_entry()
    {
        var b = Encode([Sample()]);
        Assert.Equal("snapshot table", Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(b.AsSpan(..^1), 1, 3)).Field);
        Assert.Equal("snapshot table", Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(b.AsSpan(..30), 1, 3)).Field);
        Assert.Equal("snapshot table", Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(b, 2, 3)).Field);
    }

    [Fact]
    public void Read_refuses_a_name_that_is_not_UTF8()
    {
        var b = Encode([Sample()]);
        b[^1] = 0xFE;
        Assert.Equal("snapshot name", Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(b, 1, 3)).Field);
    }

    [Fact]
    public void Read_refuses_a_table_larger_than_64_MiB()
    {
        // Entries of 40 + 1024 + 2 × 65535 bytes; 508 of them pass 64 MiB.
        const int entry = 40 + 1024 + 65535 + 65535;
        const int count = 508;
        int stride = (entry + 7) & ~7;
        var b = new byte[stride * count];
        Array.Fill(b, (byte)'a');
        for (int i = 0; i < count; i++)
        {
            int at = i * stride;
            Array.Clear(b, at, 40);
            U16(b, at + SnapshotEntry.IdSizeOffset, 65535);
            U16(b, at + SnapshotEntry.NameSizeOffset, 65535);
            U32(b, at + SnapshotEntry.ExtraDataSizeOffset, 1024);
        }
        var e = Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(b, count, 3));
        Assert.Equal("snapshot table", e.Field);
        Assert.Contains("67108864", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_reports_a_misaligned_or_oversized_snapshot_L1()
    {
        var s = Sample();
        Assert.Null(s.Validate(16));
        s.L1TableOffset = 0x40200;
        Assert.NotNull(s.Validate(16));
        s.L1TableOffset = 0x40000;
        s.L1Size = Qcow2Header.MaxL1Size + 1;
        Assert.NotNull(s.Validate(16));
    }

    [Fact]
    public void Clone_copies_the_unknown_extra_bytes()
    {
        var s = Sample();
        s.UnknownExtraData = [1];
        var c = s.Clone();
        c.UnknownExtraData[0] = 2;
        Assert.Equal(1, s.UnknownExtraData[0]);
    }
}

public class SnapshotEntryStoredSizeTests
{
    [Fact]
    public void Stored_size_is_the_fixed_part_extra_data_id_and_name()
    {
        var entry = new SnapshotEntry { L1TableOffset = 0x40000, L1Size = 2, Id = "12", Name = "nightly", DiskSize = 1L << 30 };
        var b = new byte[SnapshotTable.ComputeSize([entry])];
        SnapshotTable.Write([entry], b);
        Assert.Equal(entry.EncodedSize, SnapshotEntry.StoredSize(b));
        Assert.True(entry.EncodedSize > SnapshotEntry.FixedSize + 2 + 7, "v3 entries carry extra data");
    }
}
