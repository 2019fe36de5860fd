using Qcow2Actors.Engine.Amend;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Amend;

/// <summary>
/// The refcount width change streams: its memory is the two tables and a couple of blocks, not one
/// value per cluster of the file, so a 256 GiB file (sparse) with 4 KiB clusters is rebuilt in a few
/// MiB; and its layout arithmetic holds (and refuses past QEMU's table limit) at any size.
/// </summary>
public sealed class RefcountRebuildTests : IDisposable
{
    private const int ClusterBits = 12;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(1L << 28, 4)]
    [InlineData(1L << 28, 6)]
    [InlineData(1L << 30, 4)]
    [InlineData(7, 0)]
    [InlineData(123_456_789, 3)]
    public void The_new_structures_cover_themselves_and_every_cluster_before_them(long start, int order)
    {
        var layout = RefcountRebuild.Plan(start, ClusterBits, order);
        long perBlock = RefcountBlock.EntriesPerBlock(ClusterBits, order);
        Assert.Equal(start, layout.Start);
        Assert.True(layout.Blocks * perBlock >= layout.End, "the blocks do not cover their own clusters");
        Assert.True((layout.Blocks - 1) * perBlock < layout.End, "one block more than needed");
        Assert.True(layout.TableClusters << ClusterBits >= layout.Blocks * 8, "the table does not hold every block");
        Assert.True((layout.TableClusters - 1) << ClusterBits < layout.Blocks * 8, "one table cluster more than needed");
    }

    [Theory]
    [InlineData(1L << 30, 6)]
    [InlineData(1L << 50, 4)]
    public void A_table_past_qemus_limit_is_refused_in_one_line(long start, int order)
    {
        var ex = Assert.Throws<ImageAmendException>(() => RefcountRebuild.Plan(start, ClusterBits, order));
        Assert.Contains("above QEMU's limit of 8388608", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void A_256_GiB_file_with_4_KiB_clusters_is_rebuilt_at_64_bits_without_a_value_per_cluster_in_memory()
    {
        string path = _dir.File("big.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4L << 40, ClusterSize = 1 << ClusterBits });
        // 256 GiB of file (a hole past the image's few clusters): 2^26 clusters the new structures must cover.
        const long fileLength = 1L << 38;
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.SetLength(f, fileLength);
        using var device = FileBlockDevice.Open(path, writable: true);
        var before = Header(device);
        var old = RefcountRebuild.Read(device, before);
        var oldCounts = RefcountRebuild.NonZero(device, old, 0, old.End, new byte[1 << ClusterBits])
            .Where(e => !old.MetadataClusters.Contains(e.Cluster)).ToList();

        long allocated = GC.GetAllocatedBytesForCurrentThread();
        RefcountRebuild.Run(device, before, old, refcountOrder: 6, progress: null);
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;

        // The old code held 8 bytes per cluster (512 MiB) and every new block (1 GiB) at once.
        Assert.True(allocated < 32L << 20, $"the rebuild allocated {allocated} bytes");
        var after = Header(device);
        var layout = RefcountRebuild.Plan(fileLength >> ClusterBits, ClusterBits, 6);
        Assert.Equal(6, after.RefcountOrder);
        Assert.Equal(fileLength, after.RefcountTableOffset);
        Assert.Equal(layout.TableClusters, after.RefcountTableClusters);
        Assert.Equal(layout.End << ClusterBits, device.Length);
        // Every count as before, the new structures counted once, nothing else.
        var now = RefcountRebuild.Read(device, after);
        var counts = RefcountRebuild.NonZero(device, now, 0, now.End, new byte[1 << ClusterBits]).ToList();
        var expected = oldCounts.Concat(Enumerable.Range(0, checked((int)(layout.End - layout.Start))).Select(i => (layout.Start + i, 1UL))).ToList();
        Assert.Equal(expected, counts);
    }

    private static Qcow2Header Header(IBlockDevice device)
    {
        var cluster0 = new byte[1 << ClusterBits];
        device.Read(cluster0, 0);
        return ImageHeaderBlock.Read(cluster0).Header;
    }
}
