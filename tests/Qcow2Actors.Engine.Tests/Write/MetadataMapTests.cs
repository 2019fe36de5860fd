using Qcow2Actors.Engine.Write;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class MetadataMapTests
{
    private const int Bits = 16;
    private const long Cs = 1L << Bits;

    [Fact]
    public void Data_over_any_registered_cluster_is_a_hit_naming_the_structure_and_its_cluster()
    {
        var map = new MetadataMap(Bits);
        map.Add(0, Cs, MetadataKind.Header);
        map.Add(3 * Cs, 2 * Cs, MetadataKind.RefcountTable);

        Assert.Null(map.FindData(Cs, Cs));
        Assert.Null(map.FindData(2 * Cs + 4096, Cs - 4096)); // ends right before the table
        var hit = map.FindData(2 * Cs + 4096, Cs); // reaches 4 KiB into the table
        Assert.Equal(new OverlapHit(3 * Cs, MetadataKind.RefcountTable), hit);
        Assert.Equal("refcount table", hit!.Value.Structure);
        Assert.Equal(new OverlapHit(4 * Cs, MetadataKind.RefcountTable), map.FindData(4 * Cs + 512, 512));
        Assert.Equal(MetadataKind.Header, map.FindData(100, 8)!.Value.Kind);
    }

    [Fact]
    public void A_table_may_be_rewritten_where_it_lives_but_not_over_another_structure()
    {
        var map = new MetadataMap(Bits);
        map.Add(5 * Cs, Cs, MetadataKind.L2Table);
        map.Add(6 * Cs, Cs, MetadataKind.RefcountBlock);

        Assert.Null(map.FindTable(5 * Cs, Cs, MetadataKind.L2Table));
        Assert.Equal(MetadataKind.L2Table, map.FindTable(5 * Cs, Cs, MetadataKind.RefcountBlock)!.Value.Kind);
        Assert.Equal(new OverlapHit(6 * Cs, MetadataKind.RefcountBlock), map.FindTable(5 * Cs, 2 * Cs, MetadataKind.L2Table));
    }

    [Fact]
    public void Removing_one_structure_from_a_shared_cluster_keeps_the_other()
    {
        var map = new MetadataMap(Bits);
        // An active L2 table that a snapshot still references: copy-on-write moves the active one away.
        map.Add(7 * Cs, Cs, MetadataKind.L2Table);
        map.Add(7 * Cs, Cs, MetadataKind.SnapshotL2);
        map.Remove(7 * Cs, Cs, MetadataKind.L2Table);

        Assert.Equal(MetadataKind.SnapshotL2, map.KindsAt(7 * Cs, Cs));
        Assert.Equal("snapshot L2 table", map.FindData(7 * Cs, 4096)!.Value.Structure);
        map.Remove(7 * Cs, Cs, MetadataKind.SnapshotL2);
        Assert.Null(map.FindData(7 * Cs, Cs));
    }

    [Fact]
    public void A_freed_table_no_longer_blocks_data_and_a_moved_one_blocks_at_its_new_place()
    {
        var map = new MetadataMap(Bits);
        map.Add(10 * Cs, 3 * Cs, MetadataKind.L1Table);
        map.Remove(10 * Cs, 3 * Cs, MetadataKind.L1Table);
        map.Add(40 * Cs, 4 * Cs, MetadataKind.L1Table);

        Assert.Null(map.FindData(10 * Cs, 3 * Cs));
        Assert.Equal(new OverlapHit(43 * Cs, MetadataKind.L1Table), map.FindData(43 * Cs, 100));
        Assert.Null(map.FindData(44 * Cs, Cs));
    }

    [Theory]
    [InlineData(63L)]
    [InlineData(64L)]
    [InlineData((1L << 18) - 1)] // last cluster of the first chunk
    [InlineData(1L << 18)] // first of the second
    [InlineData((1L << 34) - 1)] // the last cluster chunks index
    [InlineData(1L << 35)] // far past it (a damaged table offset)
    public void Every_cluster_position_is_found_across_words_and_chunks(long cluster)
    {
        var map = new MetadataMap(9);
        map.Add(cluster << 9, 512, MetadataKind.RefcountBlock);

        Assert.Equal(new OverlapHit(cluster << 9, MetadataKind.RefcountBlock), map.FindData(Math.Max(0, cluster - 100) << 9, 200 << 9));
        Assert.Null(map.FindData((cluster + 1) << 9, 1000 << 9));
        if (cluster > 0) Assert.Null(map.FindData(Math.Max(0, cluster - 1000) << 9, (cluster - Math.Max(0, cluster - 1000)) << 9));
        map.Remove(cluster << 9, 512, MetadataKind.RefcountBlock);
        Assert.Null(map.FindData(Math.Max(0, cluster - 100) << 9, 200 << 9));
    }

    [Fact]
    public void Lookups_on_other_threads_see_every_change_made_before_they_start()
    {
        var map = new MetadataMap(Bits);
        for (long c = 0; c < 4096; c += 3) map.Add(c * Cs, Cs, MetadataKind.L2Table);
        var misses = Enumerable.Range(0, 4).AsParallel().Select(t =>
        {
            int wrong = 0;
            for (long c = t; c < 4096; c += 4)
                if ((map.FindData(c * Cs, 4096) is not null) != (c % 3 == 0)) wrong++;
            return wrong;
        }).Sum();
        Assert.Equal(0, misses);
    }
}
