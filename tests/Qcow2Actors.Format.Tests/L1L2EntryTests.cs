using CsCheck;
using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

public class L1L2EntryTests
{
    [Fact]
    public void Guest_offset_0x123456789ABC_maps_to_l1_37282_l2_5752_with_64_KiB_clusters()
    {
        var h = Qcow2Header.CreateNew(1L << 46, 16);
        long guest = 0x123456789ABC;
        long cluster = guest >> h.ClusterBits;
        Assert.Equal(37282, cluster / h.L2Entries);
        Assert.Equal(5752, cluster % h.L2Entries);
        Assert.Equal(0x9ABC, guest & (h.ClusterSize - 1));
    }

    [Fact]
    public void L1Entry_decodes_offset_copied_and_reserved_bits()
    {
        var e = new L1Entry(0x8000000000050000);
        Assert.Equal(0x50000, e.L2Offset);
        Assert.True(e.IsCopied);
        Assert.Equal(0UL, e.ReservedBits);
        Assert.Null(e.Validate(16));
        Assert.Equal(0x7F000000000001FFUL, new L1Entry(ulong.MaxValue).ReservedBits);
        Assert.NotNull(new L1Entry(0x0100000000050000).Validate(16));
        Assert.NotNull(new L1Entry(0x50200).Validate(16));
        Assert.True(new L1Entry(0).IsUnallocated);
        Assert.False(e.WithCopied(false).IsCopied);
    }

    [Fact]
    public void L1Entry_round_trips_offset_and_copied()
    {
        Gen.Select(Gen.Long[0, (1L << 47) - 1], Gen.Bool, Gen.Int[0, 9]).Sample((c, copied, i) =>
        {
            var e = L1Entry.Create(c << 9, copied);
            Assert.Equal(c << 9, e.L2Offset);
            Assert.Equal(copied, e.IsCopied);
            var table = new byte[80];
            e.Write(table, i);
            Assert.Equal(e, L1Entry.Read(table, i));
        });
        Assert.Throws<ArgumentOutOfRangeException>(() => L1Entry.Create(1L << 56, false));
    }

    [Fact]
    public void Compressed_entry_0x52C00000000500CE_decodes_as_verified()
    {
        var e = new L2Entry(0x52C00000000500CE);
        Assert.True(e.IsCompressed);
        Assert.False(e.IsCopied);
        Assert.Equal(54, L2Entry.CompressedOffsetBits(16));
        Assert.Equal(0x500CE, e.CompressedHostOffset(16));
        Assert.Equal(75, e.CompressedSectors(16));
        Assert.Equal(38706, e.CompressedReadLength(16));
        Assert.Equal(0x597FF, e.CompressedHostOffset(16) + e.CompressedReadLength(16) - 1);
        Assert.Equal(L2EntryKind.Compressed, e.GetKind(3, false));
        Assert.Null(e.Validate(16, false));
    }

    [Theory]
    [InlineData(38195)]
    [InlineData(38706)]
    public void Compressed_factory_uses_the_writer_sector_rule(int length) =>
        Assert.Equal(0x52C00000000500CEUL, L2Entry.Compressed(0x500CE, length, 16).Word0);

    [Fact]
    public void Compressed_factory_round_trips_at_every_cluster_size()
    {
        Gen.Select(Gen.Int[9, 21], Gen.Long[0, (1L << 48) - 1], Gen.Int[1, 1 << 21]).Sample((bits, offset, len) =>
        {
            int clusterSize = 1 << bits;
            int clen = 1 + len % (clusterSize - 1); // QEMU stores only results below cluster_size
            var e = L2Entry.Compressed(offset, clen, bits);
            Assert.Equal(offset, e.CompressedHostOffset(bits));
            Assert.InRange(e.CompressedReadLength(bits), clen, clen + 511);
            Assert.Equal(L2EntryKind.Compressed, e.GetKind(3, false));
            Assert.Null(e.Validate(bits, false));
        });
    }

    [Fact]
    public void Compressed_factory_refuses_data_spanning_too_many_sectors() =>
        // 9-bit clusters leave one bit of sector count: at most 2 sectors.
        Assert.Throws<ArgumentOutOfRangeException>(() => L2Entry.Compressed(511, 514, 9));

    [Fact]
    public void Extended_entry_example_reads_as_data_zero_and_unallocated_subclusters()
    {
        var table = new byte[32];
        var e = L2Entry.Extended(0x50000, true, allocated: 0b11, zero: 1u << 4);
        L2Table.WriteEntry(table, 1, true, e);
        Assert.Equal(Hex("8000000000050000 0000001000000003"), table[16..]);
        var r = L2Table.ReadEntry(table, 1, true);
        Assert.Equal(e, r);
        Assert.Equal(SubclusterState.Allocated, r.GetSubcluster(0));
        Assert.Equal(SubclusterState.Allocated, r.GetSubcluster(1));
        Assert.Equal(SubclusterState.Unallocated, r.GetSubcluster(2));
        Assert.Equal(SubclusterState.Zero, r.GetSubcluster(4));
        Assert.Equal(L2EntryKind.Normal, r.GetKind(3, true));
        Assert.Null(r.Validate(16, true));
    }

    [Theory]
    [InlineData(0x50000L, 1u, 0u, SubclusterState.Allocated)]
    [InlineData(0x50000L, 0u, 1u, SubclusterState.Zero)]
    [InlineData(0x50000L, 0u, 0u, SubclusterState.Unallocated)]
    [InlineData(0L, 0u, 1u, SubclusterState.Zero)]
    [InlineData(0L, 0u, 0u, SubclusterState.Unallocated)]
    [InlineData(0x50000L, 1u, 1u, SubclusterState.Invalid)]
    [InlineData(0L, 1u, 1u, SubclusterState.Invalid)]
    [InlineData(0L, 1u, 0u, SubclusterState.Invalid)]
    public void Subcluster_states_follow_the_extended_L2_table(long offset, uint alloc, uint zero, SubclusterState expected)
    {
        var e = L2Entry.Extended(offset, false, alloc, zero);
        Assert.Equal(expected, e.GetSubcluster(0));
        Assert.Equal(expected == SubclusterState.Invalid, e.Validate(16, true) is not null);
    }

    [Fact]
    public void An_alloc_bit_elsewhere_without_a_host_cluster_invalidates_every_subcluster()
    {
        var e = L2Entry.Extended(0, false, 1u << 7, 1u);
        Assert.Equal(SubclusterState.Invalid, e.GetSubcluster(0));
    }

    [Fact]
    public void External_data_file_maps_host_offset_0_with_COPIED()
    {
        var e = L2Entry.Extended(0, true, 1u, 0);
        Assert.Equal(SubclusterState.Invalid, e.GetSubcluster(0));
        Assert.Equal(SubclusterState.Allocated, e.GetSubcluster(0, externalDataFile: true));
        Assert.Null(e.Validate(16, true, externalDataFile: true));
        var s = L2Entry.Standard(0, true);
        Assert.Equal(L2EntryKind.Unallocated, s.GetKind(3, false));
        Assert.Equal(L2EntryKind.Normal, s.GetKind(3, false, externalDataFile: true));
    }

    [Fact]
    public void Compressed_extended_entry_needs_an_empty_bitmap()
    {
        var c = L2Entry.Compressed(0x500CE, 1000, 16);
        Assert.Equal(SubclusterState.Compressed, c.GetSubcluster(3));
        var bad = new L2Entry(c.Word0, 1);
        Assert.Equal(SubclusterState.Invalid, bad.GetSubcluster(3));
        Assert.Contains("bitmap", bad.Validate(16, true), StringComparison.Ordinal);
    }

    [Fact]
    public void Standard_kinds_follow_the_read_rules()
    {
        Assert.Equal(L2EntryKind.Unallocated, new L2Entry(0).GetKind(3, false));
        Assert.Equal(L2EntryKind.Normal, L2Entry.Standard(0x10000, true).GetKind(3, false));
        Assert.Equal(L2EntryKind.Normal, L2Entry.Standard(0x10000, false).GetKind(3, false));
        Assert.Equal(L2EntryKind.ZeroPlain, L2Entry.Zero().GetKind(3, false));
        Assert.Equal(L2EntryKind.ZeroAllocated, L2Entry.Zero(0x10000, true).GetKind(3, false));
        Assert.Equal(1UL, L2Entry.Zero().Word0);
        Assert.Equal(0x8000000000010001UL, L2Entry.Zero(0x10000, true).Word0);
        // Bit 0 is not a zero flag in extended mode.
        Assert.Equal(L2EntryKind.Normal, new L2Entry(0x10001).GetKind(3, true));
    }

    [Fact]
    public void Zero_flag_in_v2_reads_as_zeros_like_QEMU_but_is_reported()
    {
        var e = L2Entry.Zero();
        Assert.Equal(L2EntryKind.ZeroPlain, e.GetKind(2, false));
        Assert.NotNull(e.Validate(16, false, version: 2));
        Assert.Null(e.Validate(16, false, version: 3));
    }

    [Theory]
    [InlineData(0x0000000000010002UL, "reserved")]
    [InlineData(0x0100000000010000UL, "reserved")]
    [InlineData(0x0000000000010200UL, "unaligned")]
    [InlineData(0xC000000000010000UL, "COPIED")]
    [InlineData(0x0000000000010001UL, "bit 0")]
    public void Validate_reports_malformed_entries(ulong word0, string expected)
    {
        bool extended = expected == "bit 0";
        Assert.Contains(expected, new L2Entry(word0).Validate(16, extended), StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_reports_a_compressed_offset_beyond_2_pow_56()
    {
        // With 512-byte clusters the offset field is 61 bits wide, wider than host offsets may be.
        var e = new L2Entry(L2Entry.CompressedFlag | (1UL << 57));
        Assert.Contains("2^56", e.Validate(9, false), StringComparison.Ordinal);
    }

    [Fact]
    public void Standard_entries_round_trip_through_tables_of_both_widths()
    {
        Gen.Select(Gen.Long[0, (1L << 47) - 1], Gen.Bool, Gen.ULong, Gen.Int[0, 7]).Sample((c, copied, bitmap, i) =>
        {
            var std = L2Entry.Standard(c << 9, copied);
            var ext = L2Entry.Standard(c << 9, copied, bitmap);
            var t8 = new byte[64];
            var t16 = new byte[128];
            L2Table.WriteEntry(t8, i, false, std);
            L2Table.WriteEntry(t16, i, true, ext);
            Assert.Equal(std, L2Table.ReadEntry(t8, i, false));
            Assert.Equal(ext, L2Table.ReadEntry(t16, i, true));
            Assert.Equal(c << 9, ext.HostOffset);
            Assert.Equal(copied, ext.IsCopied);
            Assert.Equal((uint)bitmap, ext.AllocBits);
            Assert.Equal((uint)(bitmap >> 32), ext.ZeroBits);
        });
    }

    [Fact]
    public void Standard_table_refuses_a_bitmap() =>
        Assert.Throws<ArgumentException>(() => L2Table.WriteEntry(new byte[8], 0, false, new L2Entry(0, 1)));

    [Fact]
    public void Factories_refuse_offsets_the_entry_cannot_hold()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => L2Entry.Standard(0x10001, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => L2Entry.Standard(1L << 56, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => L2Entry.Compressed(1L << 54, 100, 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => new L2Entry(0).GetSubcluster(32));
    }

    [Fact]
    public void Only_an_owned_data_cluster_can_be_written_in_place()
    {
        Assert.True(L2Entry.Standard(0x10000, copied: true).CanWriteInPlace(false, 0));
        Assert.False(L2Entry.Standard(0x10000, copied: false).CanWriteInPlace(false, 0));
        Assert.False(L2Entry.Zero(0x10000, copied: true).CanWriteInPlace(false, 0));
        Assert.False(new L2Entry(0).CanWriteInPlace(false, 0));
        Assert.False(new L2Entry(L2Entry.CompressedFlag | 0x10000).CanWriteInPlace(false, 0));
        var partly = L2Entry.Extended(0x10000, copied: true, allocated: 0b0011, zero: 0);
        Assert.True(partly.CanWriteInPlace(true, 0b0001));
        Assert.False(partly.CanWriteInPlace(true, 0b0110));
    }

    [Theory]
    [InlineData(0UL, false)]
    [InlineData(1UL, true)]
    [InlineData(2UL, false)]
    public void Copied_means_a_stored_refcount_of_exactly_one(ulong refcount, bool copied) =>
        Assert.Equal(copied, L2Entry.CopiedFor(refcount));
}
