using Qcow2Actors.Engine.Read;

namespace Qcow2Actors.Engine.Tests.Read;

public sealed class GuestMapperTests
{
    private const ulong Copied = 1UL << 63;
    private static readonly ImageGeometry Standard64K = new(16, extendedL2: false, externalDataFile: false);
    private static readonly ImageGeometry Extended64K = new(16, extendedL2: true, externalDataFile: false);

    private static L2View Table(ImageGeometry g, params (int Index, ulong Word0, ulong Word1)[] entries)
    {
        var words = new ulong[g.ExtendedL2 ? g.L2Entries * 2 : g.L2Entries];
        foreach (var (i, w0, w1) in entries)
        {
            if (g.ExtendedL2) { words[2 * i] = w0; words[2 * i + 1] = w1; }
            else words[i] = w0;
        }
        return new L2View(0x10000, words, g.ExtendedL2);
    }

    [Fact]
    public void Contiguous_data_clusters_merge_into_one_run_and_stop_at_a_host_gap()
    {
        var l2 = Table(Standard64K, (0, Copied | 0x50000, 0), (1, Copied | 0x60000, 0), (2, Copied | 0x90000, 0));
        var run = GuestMapper.MapRun(Standard64K, l2, 100, 1 << 20);
        Assert.Equal(new GuestExtent(100, 0x20000 - 100, ExtentKind.Data, 0x50000 + 100), run);
        var next = GuestMapper.MapRun(Standard64K, l2, run.End, 1 << 20);
        Assert.Equal(new GuestExtent(0x20000, 0x10000, ExtentKind.Data, 0x90000), next);
    }

    [Fact]
    public void Zero_flag_reads_zero_and_keeps_a_preallocated_host_offset_apart_from_plain_zero()
    {
        var l2 = Table(Standard64K, (0, 1, 0), (1, 0x70000 | 1, 0));
        Assert.Equal(new GuestExtent(0, 0x10000, ExtentKind.Zero), GuestMapper.MapRun(Standard64K, l2, 0, 1 << 20));
        Assert.Equal(new GuestExtent(0x10000, 0x10000, ExtentKind.Zero, 0x70000), GuestMapper.MapRun(Standard64K, l2, 0x10000, 1 << 20));
    }

    [Fact]
    public void Unallocated_run_stops_at_the_end_of_the_l2_tables_coverage()
    {
        // 64 KiB clusters, 8192 entries: one table covers 512 MiB.
        var run = GuestMapper.MapRun(Standard64K, null, (512L << 20) - 4096, 1L << 40);
        Assert.Equal(4096, run.Length);
        Assert.Equal(ExtentKind.Unallocated, run.Kind);
    }

    [Fact]
    public void Compressed_descriptor_decodes_offset_and_read_length_as_format_md_shows()
    {
        // FORMAT.md §6 worked example: 0x52C00000000500CE → offset 0x500CE, 75 extra sectors, 38706 bytes.
        var l2 = Table(Standard64K, (0, 0x52C00000000500CE, 0));
        var run = GuestMapper.MapRun(Standard64K, l2, 0x1000, 1 << 20);
        Assert.Equal(new GuestExtent(0x1000, 0xF000, ExtentKind.Compressed, 0x500CE, 38706), run);
    }

    [Fact]
    public void Extended_entry_maps_each_subcluster_by_its_bits()
    {
        // FORMAT.md §7: write 0-4 KiB, zero 8-10 KiB → 8000000000050000 0000001000000003.
        var l2 = Table(Extended64K, (0, 0x8000000000050000, 0x0000001000000003));
        Assert.Equal(new GuestExtent(0, 4096, ExtentKind.Data, 0x50000), GuestMapper.MapRun(Extended64K, l2, 0, 1 << 20));
        Assert.Equal(new GuestExtent(4096, 4096, ExtentKind.Unallocated, 0x51000), GuestMapper.MapRun(Extended64K, l2, 4096, 1 << 20));
        Assert.Equal(new GuestExtent(8192, 2048, ExtentKind.Zero, 0x52000), GuestMapper.MapRun(Extended64K, l2, 8192, 1 << 20));
        var tail = GuestMapper.MapRun(Extended64K, l2, 10240, 1 << 20);
        Assert.Equal(new GuestExtent(10240, 0x10000 - 10240, ExtentKind.Unallocated, 0x52800), tail);
    }

    [Fact]
    public void Extended_run_starting_mid_subcluster_ends_on_the_first_subcluster_of_another_kind()
    {
        var l2 = Table(Extended64K, (0, 0x8000000000050000, 0x0000000000000003));
        var run = GuestMapper.MapRun(Extended64K, l2, 100, 1 << 20);
        Assert.Equal(new GuestExtent(100, 4096 - 100, ExtentKind.Data, 0x50000 + 100), run);
    }

    [Fact]
    public void Extended_zero_subclusters_without_a_cluster_are_plain_zeros()
    {
        var l2 = Table(Extended64K, (0, 0, 0xFFFF_FFFF_0000_0000));
        Assert.Equal(new GuestExtent(0, 0x10000, ExtentKind.Zero), GuestMapper.MapRun(Extended64K, l2, 0, 1 << 20));
    }

    [Theory]
    [InlineData(0x8000000000050000, 0x0000000100000001, "both allocated and zero")]
    [InlineData(0x0000000000000000, 0x0000000000000001, "no host cluster")]
    [InlineData(0x4000000000050000, 0x0000000000000001, "compressed but has subcluster bits")]
    [InlineData(0x8100000000050000, 0x0000000000000001, "reserved bits")]
    public void Invalid_extended_entries_fail_naming_the_guest_offset(ulong word0, ulong word1, string problem)
    {
        var l2 = Table(Extended64K, (3, word0, word1));
        var ex = Assert.Throws<Qcow2ImageCorruptException>(() => GuestMapper.MapRun(Extended64K, l2, 3 * 0x10000, 512));
        Assert.Contains("guest offset 196608", ex.Message);
        Assert.Contains(problem, ex.Message);
    }

    [Fact]
    public void External_data_file_entry_with_offset_0_and_copied_maps_to_host_0()
    {
        var g = new ImageGeometry(16, extendedL2: false, externalDataFile: true);
        var l2 = Table(g, (0, Copied, 0), (1, Copied | 0x10000, 0));
        Assert.Equal(new GuestExtent(0, 0x20000, ExtentKind.Data, 0), GuestMapper.MapRun(g, l2, 0, 1 << 20));
    }

    [Fact]
    public void Offsets_just_below_2_to_the_63_map_without_overflow()
    {
        var g = new ImageGeometry(21, extendedL2: false, externalDataFile: false);
        var view = new ImageView(g, long.MaxValue, [0x8000_0000_0060_0000]);
        long offset = long.MaxValue - 4096;
        // Far past the L1 table: unallocated, and the run ends exactly at the requested end.
        Assert.Equal(0, GuestMapper.L2Offset(view, offset));
        var run = GuestMapper.MapRun(g, null, offset, 4096);
        Assert.Equal(new GuestExtent(offset, 4096, ExtentKind.Unallocated), run);
        var last = GuestMapper.MapRun(g, Table(g, (g.L2Entries - 1, Copied | 0x200000, 0)), long.MaxValue - 10, 10);
        Assert.Equal(ExtentKind.Data, last.Kind);
        Assert.Equal(10, last.Length);
    }

    [Fact]
    public void L1_entry_with_reserved_bits_or_a_misaligned_table_is_corrupt()
    {
        var view = new ImageView(Standard64K, 1L << 30, [0x0100_0000_0005_0000, 0x8000_0000_0005_0200]);
        Assert.Contains("reserved bits", Assert.Throws<Qcow2ImageCorruptException>(() => GuestMapper.L2Offset(view, 0)).Message);
        Assert.Contains("not cluster aligned", Assert.Throws<Qcow2ImageCorruptException>(() => GuestMapper.L2Offset(view, 512L << 20)).Message);
    }
}
