using System.Text.Json;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// A <see cref="SpaceQuota"/> counts the allocated clusters (refcount above 0) of every image opened
/// with it: a write that would pass the limit fails whole with ENOSPC and maps nothing, the image
/// stays writable, freed space counts back, and the limit can change while images are open.
/// 4 KiB clusters: an L2 table covers 2 MiB, so requests easily span two tables.
/// </summary>
public sealed class SpaceQuotaTests(ITestOutputHelper output) : HostedImageTests
{
    private const int Cs = 4096;
    private const long Size = 16 << 20;

    private Qcow2OpenOptions Options(SpaceQuota quota) => new() { ReadOnly = false, Quota = quota };

    private string NewImage(string name)
    {
        var path = Dir.File(name);
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = Size, ClusterSize = Cs });
        return path;
    }

    [Fact]
    public void The_counter_refuses_what_would_pass_the_limit_and_takes_a_new_limit_at_once()
    {
        var quota = new SpaceQuota("acme", 100);
        Assert.True(quota.TryCharge(60));
        Assert.False(quota.TryCharge(41));
        Assert.Equal(60, quota.UsedBytes);
        Assert.Equal(40, quota.AvailableBytes);
        quota.Charge(50); // a closed image's space counts whatever the limit
        Assert.Equal(110, quota.UsedBytes);
        Assert.Equal(0, quota.AvailableBytes);
        Assert.False(quota.TryCharge(1));
        Assert.True(quota.TryCharge(0));
        quota.LimitBytes = null;
        Assert.True(quota.TryCharge(1 << 30));
        quota.Release(110 + (1 << 30));
        Assert.Equal(0, quota.UsedBytes);
        Assert.Throws<ArgumentOutOfRangeException>(() => quota.Release(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => quota.LimitBytes = -1);
        Assert.Throws<ArgumentOutOfRangeException>(() => new SpaceQuota("x", -5));
    }

    [QemuFact]
    public async Task A_write_that_would_pass_the_quota_fails_whole_maps_nothing_and_the_image_stays_writable()
    {
        var path = NewImage("disk.qcow2");
        var quota = new SpaceQuota("acme", null);
        var model = new byte[Size];
        long charged;
        await using (var image = await Host.OpenAsync(path, Options(quota)))
        {
            long atOpen = quota.UsedBytes;
            // A fresh image is its metadata: header, L1, refcount table and block, written contiguously.
            Assert.Equal(new FileInfo(path).Length, atOpen);
            quota.LimitBytes = atOpen + 20 * Cs;

            await WriteAsync(image, model, 0, 8 * Cs, 0x11); // 8 data clusters and the first L2 table
            Assert.Equal(atOpen + 9 * Cs, quota.UsedBytes);

            // 16 clusters across the 2 MiB table boundary: 16 data clusters and a second L2 table, 6 more than the quota has left.
            var error = await Assert.ThrowsAsync<Qcow2NoSpaceException>(async () => await image.WriteAsync((2 << 20) - 8 * Cs, Fill(16 * Cs, 0x22)));
            output.WriteLine(error.Message);
            Assert.Equal(28, error.HResult);
            Assert.Contains("quota 'acme'", error.Message);
            Assert.False(image.IsReadOnly, image.ReadOnlyReason);
            Assert.Equal(atOpen + 9 * Cs, quota.UsedBytes);
            Assert.Equal([(0L, 8L * Cs)], await DataExtentsAsync(image));

            // A write-zeroes that needs data clusters (partial clusters) is refused whole as well.
            quota.LimitBytes = quota.UsedBytes;
            await Assert.ThrowsAsync<Qcow2NoSpaceException>(async () => await image.WriteZeroesAsync(3 * Cs + 100, 8 * Cs));
            // At the limit: overwrites of allocated clusters, whole-cluster zeroes (metadata only) and discards still work.
            await WriteAsync(image, model, Cs, 2 * Cs, 0x33);
            await image.WriteZeroesAsync(6 * Cs, Cs);
            Array.Clear(model, 6 * Cs, Cs);
            await Assert.ThrowsAsync<Qcow2NoSpaceException>(async () => await image.WriteAsync(1 << 20, Fill(Cs, 0x44)));
            await image.DiscardAsync(4 * Cs, 2 * Cs);
            Array.Clear(model, 4 * Cs, 2 * Cs);
            // The two discarded clusters count back at once; the zeroed one keeps its space (no unmap).
            Assert.Equal(atOpen + 7 * Cs, quota.UsedBytes);
            await WriteAsync(image, model, 1 << 20, 2 * Cs, 0x44);
            Assert.Equal(quota.LimitBytes, quota.UsedBytes);

            // A higher limit takes effect with the next request: the refused write now fits.
            quota.LimitBytes += 17 * Cs;
            await WriteAsync(image, model, (2 << 20) - 8 * Cs, 16 * Cs, 0x22);
            Assert.Equal(quota.LimitBytes, quota.UsedBytes);
            await image.FlushAsync();
            charged = quota.UsedBytes;
        }
        Assert.Equal(0, quota.UsedBytes);

        QemuTools.AssertCheckClean(path);
        QemuTools.AssertSameContent(path, model, Dir.Path);
        // What the image charged, counted change by change, is what a fresh count of its refcounts finds.
        var again = new SpaceQuota("again", null);
        await using (await Host.OpenAsync(path, Options(again)))
            Assert.Equal(charged, again.UsedBytes);
        QemuTools.AssertCheckClean(path);
    }

    [QemuFact]
    public async Task Two_images_share_one_quota_and_space_one_frees_is_there_for_the_other()
    {
        var pathA = NewImage("a.qcow2");
        var pathB = NewImage("b.qcow2");
        var quota = new SpaceQuota("tenant", null);
        var modelA = new byte[Size];
        var modelB = new byte[Size];
        await using (var a = await Host.OpenAsync(pathA, Options(quota)))
        await using (var b = await Host.OpenAsync(pathB, Options(quota)))
        {
            long atOpen = quota.UsedBytes;
            Assert.Equal(new FileInfo(pathA).Length + new FileInfo(pathB).Length, atOpen);
            quota.LimitBytes = atOpen + (1 << 20);
            // A fills the quota in 64 KiB writes until it refuses.
            int written = 0;
            while (true)
            {
                try
                {
                    await WriteAsync(a, modelA, written, 16 * Cs, (byte)(written / (16 * Cs) + 1));
                    written += 16 * Cs;
                }
                catch (Qcow2NoSpaceException)
                {
                    break;
                }
                Assert.True(quota.UsedBytes <= quota.LimitBytes, $"{quota.UsedBytes} bytes in use passes the {quota.LimitBytes}-byte limit");
            }
            Assert.True(written > 0);
            Assert.True(quota.AvailableBytes < 17 * Cs);
            await Assert.ThrowsAsync<Qcow2NoSpaceException>(async () => await b.WriteAsync(0, Fill(32 * Cs, 0x55)));
            Assert.False(a.IsReadOnly || b.IsReadOnly);

            await a.DiscardAsync(0, 64 * Cs);
            Array.Clear(modelA, 0, 64 * Cs);
            await WriteAsync(b, modelB, 0, 32 * Cs, 0x55);
            Assert.True(quota.UsedBytes <= quota.LimitBytes);
        }
        Assert.Equal(0, quota.UsedBytes);
        QemuTools.AssertCheckClean(pathA);
        QemuTools.AssertCheckClean(pathB);
        QemuTools.AssertSameContent(pathA, modelA, Dir.Path);
        QemuTools.AssertSameContent(pathB, modelB, Dir.Path);
    }

    [QemuFact]
    public async Task Concurrent_random_writes_of_two_images_never_pass_the_limit_and_the_charge_matches_the_refcounts()
    {
        // 12 MiB of new space crosses the 8 MiB a refcount block covers at 4 KiB clusters: new blocks are charged too.
        var paths = new[] { NewImage("r1.qcow2"), NewImage("r2.qcow2") };
        var quota = new SpaceQuota("busy", null);
        var charged = new long[2];
        var images = new Qcow2Image[2];
        for (int i = 0; i < 2; i++) images[i] = await Host.OpenAsync(paths[i], Options(quota));
        quota.LimitBytes = quota.UsedBytes + (12 << 20);
        int refused = 0;
        var random = new Random(9);
        var requests = new List<(int Image, long Offset, int Length, bool Discard)>();
        for (int n = 0; n < 1200; n++)
            requests.Add((random.Next(2), random.NextInt64(Size / Cs - 64) * Cs + (random.Next(4) == 0 ? 512 : 0), random.Next(1, 64) * Cs, random.Next(8) == 0));
        await Parallel.ForEachAsync(requests, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (r, ct) =>
        {
            try
            {
                if (r.Discard) await images[r.Image].DiscardAsync(r.Offset, r.Length, ct);
                else await images[r.Image].WriteAsync(r.Offset, Fill(r.Length, (byte)r.Length), cancellationToken: ct);
            }
            catch (Qcow2NoSpaceException)
            {
                Interlocked.Increment(ref refused);
            }
            long used = quota.UsedBytes;
            Assert.True(used <= quota.LimitBytes, $"{used} bytes in use passes the {quota.LimitBytes}-byte limit");
        });
        output.WriteLine($"{refused} of {requests.Count} requests refused; {quota.UsedBytes} of {quota.LimitBytes} bytes in use");
        Assert.True(refused > 0, "the workload never reached the limit");
        foreach (var image in images)
        {
            Assert.False(image.IsReadOnly, image.ReadOnlyReason);
            await image.FlushAsync();
        }
        long total = quota.UsedBytes;
        for (int i = 0; i < 2; i++) await images[i].DisposeAsync();
        Assert.Equal(0, quota.UsedBytes);
        long recount = 0;
        for (int i = 0; i < 2; i++)
        {
            QemuTools.AssertCheckClean(paths[i]);
            var fresh = new SpaceQuota("recount", null);
            await using (await Host.OpenAsync(paths[i], Options(fresh))) recount += fresh.UsedBytes;
            QemuTools.AssertCheckClean(paths[i]);
        }
        Assert.Equal(total, recount);
    }

    [QemuFact]
    public async Task An_image_closed_and_reopened_charges_what_qemu_img_check_counts_as_allocated()
    {
        var path = NewImage("count.qcow2");
        await using (var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            await image.WriteAsync(0, Fill(40 * Cs, 1));
            await image.WriteAsync(5 << 20, Fill(3 * Cs, 2));
        }
        var quota = new SpaceQuota("count", null);
        await using (await Host.OpenAsync(path, Options(quota)))
        {
            var check = QemuTools.QemuImg("check", "-U", "--output", "json", path);
            using var json = JsonDocument.Parse(check.StdOut);
            long data = json.RootElement.GetProperty("allocated-clusters").GetInt64();
            // Data clusters, two L2 tables, and the metadata of a fresh image (its file length before the writes).
            Assert.Equal(43, data);
            Assert.Equal((data + 2 + 4) * Cs, quota.UsedBytes);
        }
    }

    [QemuFact]
    public async Task Online_snapshot_create_and_delete_keep_the_charge_equal_to_a_fresh_count()
    {
        var path = NewImage("snap.qcow2");
        var quota = new SpaceQuota("snap", null);
        long afterCreate, afterOverwrite, afterDelete;
        await using (var image = await Host.OpenAsync(path, Options(quota)))
        {
            await image.WriteAsync(0, Fill(40 * Cs, 1));
            long before = quota.UsedBytes;
            await image.CreateSnapshotAsync("s1");
            afterCreate = quota.UsedBytes;
            // The snapshot's L1 copy and table are new clusters.
            Assert.True(afterCreate > before, $"{afterCreate} after the snapshot, {before} before");
            // Overwriting shared clusters copies them: 40 more data clusters and a new L2 table.
            await image.WriteAsync(0, Fill(40 * Cs, 2));
            afterOverwrite = quota.UsedBytes;
            Assert.True(afterOverwrite >= afterCreate + 40 * Cs, $"{afterOverwrite} after the overwrite");
            await image.DeleteSnapshotAsync("s1");
            afterDelete = quota.UsedBytes;
            Assert.True(afterDelete <= afterOverwrite - 40 * Cs, $"{afterDelete} after the delete");
        }
        Assert.Equal(0, quota.UsedBytes);
        QemuTools.AssertCheckClean(path);
        var fresh = new SpaceQuota("fresh", null);
        await using (await Host.OpenAsync(path, Options(fresh)))
            Assert.Equal(afterDelete, fresh.UsedBytes);
    }

    private static async Task<List<(long Offset, long Length)>> DataExtentsAsync(Qcow2Image image)
    {
        var extents = new List<(long, long)>();
        await foreach (var e in image.GetMapAsync(0, image.VirtualSize))
            if (e.Data) extents.Add((e.Start, e.Length));
        return extents;
    }

    private static async Task WriteAsync(Qcow2Image image, byte[] model, long offset, int length, byte value)
    {
        var data = Fill(length, value);
        await image.WriteAsync(offset, data);
        data.CopyTo(model, offset);
    }

    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();
}
