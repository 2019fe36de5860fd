using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Bitmaps;

/// <summary>
/// Persistent dirty bitmaps through <see cref="Qcow2Image.Bitmaps"/> and <see cref="Qcow2Image.GetBitmapExtentsAsync"/>:
/// QEMU's bitmaps read back bit for bit on read-only opens, and the engine keeps enabled bitmaps on
/// read-write opens so QEMU finds them consistent and exact after a clean close.
/// </summary>
public sealed class PersistentBitmapTests : IDisposable
{
    private const long Size = 16 << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static async Task<List<BitmapExtent>> ExtentsAsync(Qcow2Image image, string name, long offset = 0, long length = Size)
    {
        var list = new List<BitmapExtent>();
        await foreach (var e in image.GetBitmapExtentsAsync(name, offset, length)) list.Add(e);
        return list;
    }

    private string QemuImageWithBitmaps()
    {
        var path = _dir.File("q.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", path, Size.ToString()).EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", path, "b0").EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", "-g", "4096", "--disable", path, "off").EnsureSuccess();
        // qemu-io's writes go through the block layer, which sets every enabled bitmap's bits.
        QemuTools.QemuIo("-c", "write 0 4k", "-c", "write 1M 70k", path).EnsureSuccess();
        return path;
    }

    [QemuFact]
    public async Task A_read_only_open_reads_the_bits_QEMU_stored_granule_for_granule()
    {
        var path = QemuImageWithBitmaps();
        await using var image = await Qcow2Image.OpenAsync(path);

        var bitmaps = image.Bitmaps;
        Assert.Equal(["b0", "off"], bitmaps.Select(b => b.Name));
        Assert.Equal(65536, bitmaps[0].Granularity);
        Assert.True(bitmaps[0].Enabled);
        Assert.False(bitmaps[0].InUse || bitmaps[0].Inconsistent || bitmaps[0].Tracked);
        Assert.Equal(4096, bitmaps[1].Granularity);
        Assert.False(bitmaps[1].Enabled);

        Assert.Equal(
            [new(0, 65536, true), new(65536, (1 << 20) - 65536, false), new(1 << 20, 131072, true), new((1 << 20) + 131072, Size - (1 << 20) - 131072, false)],
            await ExtentsAsync(image, "b0"));
        // A sub-range starts and ends where asked, mid-granule.
        Assert.Equal([new(1000, 64536, true), new(65536, 1000, false)], await ExtentsAsync(image, "b0", 1000, 65536));
        Assert.Equal([new(0, Size, false)], await ExtentsAsync(image, "off"));
        var missing = await Assert.ThrowsAsync<KeyNotFoundException>(async () => await ExtentsAsync(image, "nope"));
        Assert.Contains("'nope'", missing.Message);
    }

    [QemuFact]
    public async Task Writes_through_the_engine_set_the_granules_they_touch_and_a_clean_close_leaves_the_bitmap_consistent()
    {
        var path = _dir.File("w.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", path, Size.ToString()).EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", "-g", "8192", path, "b0").EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", "--disable", path, "frozen").EnsureSuccess();
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            var b0 = image.Bitmaps[0];
            Assert.True(b0.Tracked && !b0.InUse && !b0.Inconsistent);
            Assert.False(image.Bitmaps[1].Tracked);
            // What it stores is exact until a write dirties a granule it lacks: QEMU reads it as consistent.
            Assert.DoesNotContain("in-use", QemuTools.QemuImg("info", "-U", path).EnsureSuccess().StdOut);

            await image.WriteAsync(8192 * 3 + 100, new byte[10]);
            // From then until the next store it is in use on disk, its new granules in the journal.
            Assert.True(image.Bitmaps[0].InUse);
            await image.WriteZeroesAsync(1 << 20, 3 * 8192);
            await image.FlushAsync();
            await image.DiscardAsync(4 << 20, 65536);
            // An online snapshot checkpoints the image: the bitmap stays tracked after it.
            await image.CreateSnapshotAsync("s1");
            Assert.True(image.Bitmaps[0].Tracked && !image.Bitmaps[0].InUse);
            await image.WriteAsync(6 << 20, new byte[1]);
            // Live: writes not yet stored show.
            Assert.Equal([new(0, 3 * 8192, false), new(3 * 8192, 8192, true), new(4 * 8192, (1 << 20) - 4 * 8192, false)],
                await ExtentsAsync(image, "b0", 0, 1 << 20));
        }

        var info = QemuTools.QemuImg("info", path).EnsureSuccess().StdOut;
        Assert.DoesNotContain("in-use", info);
        QemuTools.AssertCheckClean(path);
        await using (var reopened = await Qcow2Image.OpenAsync(path))
        {
            Assert.Equal(
                [new(0, 3 * 8192, false), new(3 * 8192, 8192, true), new(4 * 8192, (1 << 20) - 4 * 8192, false),
                 new(1 << 20, 3 * 8192, true), new((1 << 20) + 3 * 8192, (3 << 20) - 3 * 8192, false),
                 new(4 << 20, 65536, true), new((4 << 20) + 65536, (2 << 20) - 65536, false),
                 new(6 << 20, 8192, true), new((6 << 20) + 8192, Size - (6 << 20) - 8192, false)],
                await ExtentsAsync(reopened, "b0"));
            Assert.Equal([new(0, Size, false)], await ExtentsAsync(reopened, "frozen"));
        }
        // QEMU accepts it as consistent: a merge from it succeeds.
        QemuTools.QemuImg("bitmap", "--add", path, "copy").EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--merge", "b0", path, "copy").EnsureSuccess();
    }

    [QemuFact]
    public async Task A_bitmap_added_online_is_tracked_grows_with_the_disk_and_QEMU_reads_it_after_close()
    {
        var path = _dir.File("online.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", path, Size.ToString()).EnsureSuccess();
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            await image.WriteAsync(0, new byte[512]); // before the bitmap: not in it
            await image.AddBitmapAsync("b", 65536);
            await image.AddBitmapAsync("off", 4096, enabled: false);
            var taken = await Assert.ThrowsAsync<InvalidOperationException>(async () => await image.AddBitmapAsync("b"));
            Assert.Equal("Bitmap already exists: b", taken.Message);
            await image.WriteAsync(1 << 20, new byte[512]);
            await image.ResizeAsync(2 * Size);
            await image.WriteAsync(Size + 65536, new byte[512]);
            await image.SetBitmapEnabledAsync("off", true);
            await image.MergeBitmapAsync("off", "b");
            await image.WriteAsync((3 << 20) + 8192, new byte[512]);
        }

        QemuTools.AssertCheckClean(path);
        Assert.DoesNotContain("in-use", QemuTools.QemuImg("info", path).EnsureSuccess().StdOut);
        await using var reopened = await Qcow2Image.OpenAsync(path);
        Assert.Equal(Runs(2 * Size, (1 << 20, 65536), (3 << 20, 65536), (Size + 65536, 65536)), await ExtentsAsync(reopened, "b", 0, 2 * Size));
        Assert.Equal(Runs(2 * Size, (1 << 20, 65536), ((3 << 20) + 8192, 4096), (Size + 65536, 65536)), await ExtentsAsync(reopened, "off", 0, 2 * Size));
    }

    [QemuFact]
    public async Task A_disabled_bitmap_read_from_disk_takes_a_merge_and_grows_with_the_disk()
    {
        var path = QemuImageWithBitmaps();
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            Assert.False(image.Bitmaps[1].Tracked);
            await image.MergeBitmapAsync("off", "b0");
            await image.ResizeAsync(2 * Size);
            await image.WriteAsync(Size, new byte[1]); // "off" is disabled: not in it
        }

        QemuTools.AssertCheckClean(path);
        QemuTools.QemuImg("bitmap", "--add", path, "check").EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--merge", "off", path, "check").EnsureSuccess();
        await using var reopened = await Qcow2Image.OpenAsync(path);
        Assert.Equal(Runs(2 * Size, (0, 65536), (1 << 20, 131072)), await ExtentsAsync(reopened, "off", 0, 2 * Size));
        Assert.Equal(Runs(2 * Size, (0, 65536), (1 << 20, 131072), (Size, 65536)), await ExtentsAsync(reopened, "b0", 0, 2 * Size));
    }

    // The extents of a disk of `total` bytes whose dirty runs are `dirty` (in order).
    private static List<BitmapExtent> Runs(long total, params (long Start, long Length)[] dirty)
    {
        var list = new List<BitmapExtent>();
        long pos = 0;
        foreach (var (start, length) in dirty)
        {
            if (start > pos) list.Add(new(pos, start - pos, false));
            list.Add(new(start, length, true));
            pos = start + length;
        }
        if (pos < total) list.Add(new(pos, total - pos, false));
        return list;
    }
}
