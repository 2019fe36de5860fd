using System.Text.Json;
using Akka.Configuration;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// While an image is open for writing, its file is grown (sparse) ahead of the clusters it allocates, so the
/// writes that fill new clusters land inside the file instead of each extending it. A clean close trims the
/// file back to its image end offset; a crash leaves a tail of zeros nothing references, which checks clean.
/// </summary>
public sealed class GrowAheadTests : IDisposable
{
    private const int ClusterSize = 65536;
    private const int Slot = 4096;
    private const int Clusters = 200;
    private const long DiskSize = 64L << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static ImageHost NewHost(string extra = "") =>
        ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s\n" + extra);

    // One 4 KiB write into the fourth slot of each of the first Clusters guest clusters: each allocates a fresh cluster
    // and writes only its data, so without growing ahead the file would end 16 KiB into its last data cluster.
    private static async Task WriteSlots(Qcow2Image image, byte seed)
    {
        for (int c = 0; c < Clusters; c++)
            await image.WriteAsync((long)c * ClusterSize + 3 * Slot, Pattern(c, seed));
        await image.FlushAsync();
    }

    private static byte[] Pattern(int cluster, byte seed) => Enumerable.Repeat((byte)(seed + cluster % 200), Slot).ToArray();

    private static async Task<long> LastHostClusterEnd(Qcow2Image image)
    {
        long end = 0;
        await foreach (var extent in image.GetMapAsync(0, image.VirtualSize))
            if (extent.Offset is { } host) end = Math.Max(end, host + extent.Length);
        return end;
    }

    private static long ImageEndOffset(string path)
    {
        var check = QemuTools.QemuImg("check", "--output", "json", path);
        using var json = JsonDocument.Parse(check.StdOut);
        return json.RootElement.GetProperty("image-end-offset").GetInt64();
    }

    private static void AssertSlotsRead(string path, byte seed)
    {
        foreach (int c in new[] { 0, 1, Clusters / 2, Clusters - 1 })
        {
            var read = QemuTools.QemuIo("-c", $"read -P {(byte)(seed + c % 200)} {(long)c * ClusterSize + 3 * Slot} {Slot}", path);
            Assert.True(read.ExitCode == 0 && !read.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), read.StdOut + read.StdErr);
        }
    }

    [QemuFact]
    public async Task An_open_image_runs_ahead_of_its_new_clusters_and_a_clean_close_ends_it_at_the_image_end_offset()
    {
        var path = _dir.File("grow.qcow2");
        await using (var host = NewHost())
        await using (var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = ClusterSize }))
        {
            await WriteSlots(image, 7);
            long lastCluster = await LastHostClusterEnd(image);
            long open = new FileInfo(path).Length;
            Assert.True(open > lastCluster, $"the open file is {open} bytes; its last data cluster ends at {lastCluster}");
        }

        QemuTools.AssertCheckClean(path);
        Assert.Equal(ImageEndOffset(path), new FileInfo(path).Length);
        AssertSlotsRead(path, 7);
    }

    [QemuFact]
    public async Task A_crash_after_growing_leaves_a_zero_tail_that_checks_clean_and_is_reused_by_the_next_writer()
    {
        var path = _dir.File("crash.qcow2");
        var host = NewHost();
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = ClusterSize });
        await WriteSlots(image, 7);
        await host.DisposeAsync(); // crash: never closed, the grown tail stays

        await using (var next = NewHost())
        await using (var reopened = await next.OpenAsync(path))
        {
            Assert.False(reopened.IsReadOnly, reopened.ReadOnlyReason);
            // New clusters: the tail's are free (refcount 0) but no longer known to read as zeros, so the writer
            // fills each one it takes whole.
            for (int c = Clusters; c < 2 * Clusters; c++)
                await reopened.WriteAsync((long)c * ClusterSize + 3 * Slot, Pattern(c, 9));
        }

        QemuTools.AssertCheckClean(path);
        AssertSlotsRead(path, 7);
        foreach (int c in new[] { Clusters, Clusters + 1, 2 * Clusters - 1 })
        {
            long at = (long)c * ClusterSize;
            var read = QemuTools.QemuIo("-c", $"read -P 0 {at} {3 * Slot}", "-c", $"read -P {(byte)(9 + c % 200)} {at + 3 * Slot} {Slot}",
                "-c", $"read -P 0 {at + 4 * Slot} {ClusterSize - 4 * Slot}", path);
            Assert.True(read.ExitCode == 0 && !read.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), read.StdOut + read.StdErr);
        }
    }

    [QemuFact]
    public async Task With_grow_ahead_at_zero_the_file_ends_where_the_last_data_write_ended()
    {
        var path = _dir.File("off.qcow2");
        await using (var host = NewHost("qcow2actors.engine.grow-ahead = 0"))
        await using (var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = ClusterSize }))
        {
            await WriteSlots(image, 3);
            long lastCluster = await LastHostClusterEnd(image);
            Assert.Equal(lastCluster - ClusterSize + 4 * Slot, new FileInfo(path).Length);
        }

        QemuTools.AssertCheckClean(path);
        AssertSlotsRead(path, 3);
    }

    [Fact]
    public void A_grow_ahead_that_is_not_a_size_is_named()
    {
        var error = Assert.Throws<ConfigurationException>(() => NewHost("qcow2actors.engine.grow-ahead = lots"));
        Assert.Contains("qcow2actors.engine.grow-ahead", error.Message);
    }
}
