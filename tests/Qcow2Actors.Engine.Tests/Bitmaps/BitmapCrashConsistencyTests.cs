using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Bitmaps;

/// <summary>
/// Tracked bitmaps after a crash: the journal holds every granule a write was about to dirty, so
/// recovery leaves the bitmap consistent and covering the write; a checkpoint that stores the
/// bitmaps and empties the journal cannot lose a granule journaled while it ran; a journal that
/// does not prove it tracked the bitmap (one written before this existed) leaves it in use.
/// </summary>
public sealed class BitmapCrashConsistencyTests : IDisposable
{
    private const int KiB = 1024, MiB = 1024 * KiB;
    private const int Granule = 64 * KiB;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static ImageHost NewHost() => ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");

    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    private static async Task<List<BitmapExtent>> DirtyAsync(Qcow2Image image, string name)
    {
        var list = new List<BitmapExtent>();
        await foreach (var e in image.GetBitmapExtentsAsync(name, 0, image.VirtualSize))
            if (e.Dirty) list.Add(e);
        return list;
    }

    /// <summary>An image with bitmap "b" (64 KiB granules), closed.</summary>
    private async Task<string> ImageWithBitmapAsync(string name)
    {
        var path = _dir.File(name);
        await using var host = NewHost();
        await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = 4 * MiB });
        await image.AddBitmapAsync("b", Granule);
        return path;
    }

    [Fact]
    public async Task A_write_racing_a_checkpoint_that_stores_the_bitmap_is_still_in_it_after_a_crash()
    {
        var path = await ImageWithBitmapAsync("race.qcow2");
        var hold = new WriteHold();
        var host = NewHost();
        var image = await host.OpenAsync(path, new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, writable) => new HoldOneWrite(FileBlockDevice.Open(p, writable), hold),
        });
        await image.WriteAsync(0, Fill(4 * KiB, 1));
        await image.FlushAsync();

        // The checkpoint's first device write is the bitmap's data: its bits are snapshotted by then.
        hold.Armed = true;
        var checkpoint = image.CheckpointAsync().AsTask();
        await hold.Arrived.Task.WaitAsync(Timeout);
        // A granule the snapshot lacks: journaled into the journal the checkpoint is about to empty,
        // it would be lost with the bitmap stored without it (and not in use, so trusted).
        var racing = image.WriteAsync(1 * MiB, Fill(4 * KiB, 2)).AsTask();
        hold.Release.TrySetResult();
        await Task.WhenAll(checkpoint, racing).WaitAsync(Timeout);
        await host.DisposeAsync(); // the crash: never closed

        await using var recovery = NewHost();
        await using var reopened = await recovery.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        var b = Assert.Single(reopened.Bitmaps);
        Assert.False(b.InUse || b.Inconsistent, b.ToString());
        Assert.Equal([new(0, Granule, true), new(1 * MiB, Granule, true)], await DirtyAsync(reopened, "b"));
    }

    [Fact]
    public async Task A_journal_without_the_bitmap_evidence_an_older_version_wrote_leaves_the_bitmap_in_use()
    {
        var path = await ImageWithBitmapAsync("old.qcow2");
        var host = NewHost();
        var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        await image.WriteAsync(0, Fill(4 * KiB, 1));
        await image.FlushAsync();
        await image.WriteAsync(2 * MiB, Fill(4 * KiB, 2));
        Assert.True(image.Bitmaps[0].InUse);
        await host.DisposeAsync();

        var batches = JournalFileReader.ReadBatches(path + FileJournalPaths.Suffix, 64 * MiB);
        Assert.Contains(batches.SelectMany(b => b.Records), r => r is BitmapTracked);
        // The same journal as a version before bitmap evidence wrote it: metadata records only.
        var old = batches.Select(b => new JournalBatch([.. b.Records.Where(r => r is not BitmapTracked and not BitmapRangesSet)])).ToList();
        var copy = _dir.File("old-copy.qcow2");
        File.Copy(path, copy);

        using (var device = FileBlockDevice.Open(copy, writable: true))
            ImageRecovery.Recover(device, copy, old, rebuildWithoutJournal: false);
        using (var device = FileBlockDevice.Open(path, writable: true))
            ImageRecovery.Recover(device, path, batches, rebuildWithoutJournal: false);

        await using (var stale = await Qcow2Image.OpenAsync(copy))
        {
            var b = Assert.Single(stale.Bitmaps);
            Assert.True(b.InUse && b.Inconsistent, b.ToString());
        }
        await using (var recovered = await Qcow2Image.OpenAsync(path))
        {
            var b = Assert.Single(recovered.Bitmaps);
            Assert.False(b.InUse || b.Inconsistent, b.ToString());
            Assert.Equal([new(0, Granule, true), new(2 * MiB, Granule, true)], await DirtyAsync(recovered, "b"));
        }
    }

    [Fact]
    public async Task Only_the_first_write_to_a_granule_since_the_last_store_waits_for_the_journal_and_a_store_ends_the_in_use_flag()
    {
        var path = await ImageWithBitmapAsync("cost.qcow2");
        await using var host = NewHost();
        await using var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        Assert.False(image.Bitmaps[0].InUse);
        var bitmaps = image.WriteContext!.Bitmaps!;

        Assert.True(bitmaps.NeedsJournal(0, 4 * KiB));
        await image.WriteAsync(0, Fill(4 * KiB, 1));
        Assert.True(image.Bitmaps[0].InUse);
        // Durable now: another write to the granule (or a zero write, a discard) journals nothing.
        Assert.False(bitmaps.NeedsJournal(8 * KiB, 4 * KiB));
        Assert.True(bitmaps.NeedsJournal(Granule, 1));

        await image.CheckpointAsync();
        Assert.False(image.Bitmaps[0].InUse);
        Assert.False(bitmaps.NeedsJournal(0, Granule));
        Assert.True(bitmaps.NeedsJournal(Granule, 1));
    }
}
