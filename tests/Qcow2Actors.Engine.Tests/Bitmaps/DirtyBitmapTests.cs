using Qcow2Actors.Engine.Bitmaps;

namespace Qcow2Actors.Engine.Tests.Bitmaps;

/// <summary>The in-memory bits of one bitmap: granule edges, runs, the on-disk cluster form, growth.</summary>
public sealed class DirtyBitmapTests
{
    [Fact]
    public void A_mark_sets_every_granule_the_range_touches_and_no_other()
    {
        var b = new DirtyBitmap(12, 1 << 20); // 4 KiB granules
        b.Mark(4095, 2);                       // the last byte of granule 0 and the first of granule 1
        b.Mark(64 * 4096, 64 * 4096 + 1);      // granules 64..128: crosses a 64-bit word
        Assert.Equal(
            [new(0, 8192, true), new(8192, 62 * 4096, false), new(64 * 4096, 65 * 4096, true), new(129 * 4096, (1 << 20) - 129 * 4096, false)],
            b.Extents(0, 1 << 20).ToList());
        Assert.Equal(2 + 65, b.Count());
    }

    [Fact]
    public void A_partial_last_granule_is_one_bit_and_runs_end_at_the_disk()
    {
        var b = new DirtyBitmap(16, 100_000); // 1.5 granules
        Assert.Equal(2, b.Bits);
        b.Mark(99_999, 1);
        Assert.Equal([new(0, 65536, false), new(65536, 100_000 - 65536, true)], b.Extents(0, 100_000).ToList());
    }

    [Fact]
    public void Bits_stored_in_clusters_load_back_the_same_and_an_empty_cluster_needs_no_data()
    {
        const int cluster = 512;                         // 4096 bits per table entry
        var b = new DirtyBitmap(9, 4096L * 512 * 3);      // three table entries
        b.Mark(5 * 512, 512);
        b.Mark(2L * 4096 * 512 + 7 * 512, 3 * 512);
        Assert.Equal(3, b.TableSize(cluster));
        var copy = new DirtyBitmap(9, 4096L * 512 * 3);
        var data = new byte[cluster];
        for (int i = 0; i < 3; i++)
        {
            bool any = b.StoreCluster(i, data);
            Assert.Equal(i != 1, any);
            if (any) copy.LoadCluster(i, data);
        }
        Assert.Equal(b.Extents(0, copy.VirtualSize).ToList(), copy.Extents(0, copy.VirtualSize).ToList());
        // LSB first in each byte (FORMAT.md §9): bit 5 of the first entry is bit 5 of byte 0.
        b.StoreCluster(0, data);
        Assert.Equal(1 << 5, data[0]);
    }

    [Fact]
    public void An_all_ones_entry_sets_only_bits_inside_the_disk()
    {
        var b = new DirtyBitmap(16, 10 * 65536);
        b.LoadAllOnes(0, 512);
        Assert.Equal(10, b.Count());
    }

    [Fact]
    public void A_grown_bitmap_keeps_its_bits_and_the_new_space_is_clean()
    {
        var b = new DirtyBitmap(16, 1 << 20);
        b.Mark(0, 1);
        var grown = b.Resized(4 << 20);
        Assert.Equal([new(0, 65536, true), new(65536, (4 << 20) - 65536, false)], grown.Extents(0, 4 << 20).ToList());
    }
}
