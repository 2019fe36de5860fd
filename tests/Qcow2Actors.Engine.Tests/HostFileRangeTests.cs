using System.Runtime.InteropServices;
using Akka.Actor;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// <see cref="Qcow2Image.TryPinFileRange"/> pins a guest range where its bytes lie, for a server to send them
/// straight from the host file: only one cached run of stored data, at the host offset the map reports. While
/// pinned, a discard's freed clusters are not released (so no new write lands in bytes on their way out) and an
/// online snapshot edit waits.
/// </summary>
public sealed partial class HostFileRangeTests : HostedImageTests
{
    private const int Cluster = 65536;
    private const int Run = 1 << 20;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [LinuxFact]
    public async Task A_cached_run_of_data_is_pinned_at_its_host_offset_and_copies_out_the_guest_bytes()
    {
        var path = Dir.File("pin.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 16 << 20, ClusterSize = Cluster });
        var data = Pattern(Run, 3);
        await using var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        await image.WriteAsync(0, data); // one allocation: one host run
        await image.ReadAsync(0, new byte[Run]); // large writes go around the page cache: a read brings them in

        using var pin = image.TryPinFileRange(0, Run);
        Assert.NotNull(pin);
        Assert.Equal(await HostOffsetAsync(image, 0), pin.FileOffset);
        Assert.Equal(Run, pin.Length);
        var copy = new byte[Run];
        pin.CopyTo(copy, 0);
        Assert.Equal(data, copy);
        var tail = new byte[4096];
        pin.CopyTo(tail, Run - 4096);
        Assert.Equal(data.AsSpan(Run - 4096).ToArray(), tail);
        Assert.Equal(1, image.WriteContext!.Leases.Count);
        pin.Dispose();
        Assert.Equal(0, image.WriteContext!.Leases.Count);
    }

    [LinuxFact]
    public async Task Zeros_unallocated_space_split_runs_and_ranges_past_the_disk_are_not_pinned()
    {
        var path = Dir.File("nopin.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 16 << 20, ClusterSize = Cluster });
        await using var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        // Clusters 0 and 1 written apart, so another cluster's allocation lies between them on the host.
        await image.WriteAsync(0, Pattern(Cluster, 1));
        await image.WriteAsync(5L * Cluster, Pattern(Cluster, 2));
        await image.WriteAsync(Cluster, Pattern(Cluster, 3));
        await image.WriteZeroesAsync(8L * Cluster, Cluster);

        Assert.Null(image.TryPinFileRange(0, 2 * Cluster));             // two host runs
        Assert.Null(image.TryPinFileRange(2L * Cluster, Cluster));      // unallocated
        Assert.Null(image.TryPinFileRange(8L * Cluster, Cluster));      // zero cluster
        Assert.Null(image.TryPinFileRange((16 << 20) - 4096, 8192));    // past the disk
        using var one = image.TryPinFileRange(Cluster, Cluster);
        Assert.NotNull(one); // each run alone is pinned
        Assert.Equal(1, image.WriteContext!.Leases.Count);
    }

    [LinuxFact]
    public async Task A_pinned_range_keeps_its_discarded_clusters_from_reuse_until_it_is_let_go()
    {
        var path = Dir.File("discard.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 8 << 20, ClusterSize = Cluster });
        var fresh = Pattern(Cluster, 9);
        await using (var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            var ctx = image.WriteContext!;
            await image.WriteAsync(0, Pattern(Cluster, 5));
            await image.FlushAsync();
            long pinnedAt = await HostOffsetAsync(image, 0);
            var pin = image.TryPinFileRange(0, Cluster);
            Assert.NotNull(pin);

            await image.DiscardAsync(0, Cluster);
            await image.FlushAsync();
            // The refcount actor answers this barrier only after the release the flush sent it, unless the lease holds it.
            var barrier = new TaskCompletionSource<ulong[]>(TaskCreationOptions.RunContinuationsAsynchronously);
            ctx.Refcounts.Tell(new GetRefcounts([], barrier));
            await Task.WhenAny(ctx.Leases.FirstWait, barrier.Task).WaitAsync(Timeout);
            Assert.True(ctx.Leases.FirstWait.IsCompleted, "the discarded cluster was released while pinned for a send");
            await image.WriteAsync(Cluster, fresh);
            Assert.NotEqual(pinnedAt, await HostOffsetAsync(image, Cluster));

            var sent = new byte[Cluster];
            pin.CopyTo(sent, 0);
            Assert.Equal(Pattern(Cluster, 5), sent); // the pinned bytes are still the ones it was pinned for
            pin.Dispose();
            await image.CheckpointAsync(); // reaches the refcount actor after the release the pin held back
            Assert.Equal(0, ctx.Allocator!.QuarantineCount);
        }
        QemuTools.AssertCheckClean(path);
    }

    [LinuxFact]
    public async Task An_online_snapshot_waits_for_a_pin_to_be_let_go()
    {
        var path = Dir.File("snap.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 8 << 20, ClusterSize = Cluster });
        await using var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        await image.WriteAsync(0, Pattern(Cluster, 7));
        var pin = image.TryPinFileRange(0, Cluster);
        Assert.NotNull(pin);

        var snapshot = image.CreateSnapshotAsync("s1").AsTask();
        await image.EditHoldingRequests.WaitAsync(Timeout); // the door is closed: the edit waits for those inside
        Assert.False(snapshot.IsCompleted, "the snapshot was taken while a pin was out");
        Assert.Null(image.TryPinFileRange(0, Cluster)); // a closed door pins nothing
        pin.Dispose();
        Assert.Equal("s1", (await snapshot.WaitAsync(Timeout)).Name);
    }

    [DirectIoFact]
    public async Task A_range_not_in_the_page_cache_is_not_pinned()
    {
        var dir = DirectIoDirectory.Create();
        try
        {
            var path = Path.Combine(dir, "cold.qcow2");
            ImageCreator.Create(path, new Qcow2CreateOptions { Size = 16 << 20, ClusterSize = Cluster });
            await using var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
            await image.WriteAsync(0, Pattern(Run, 4));
            await image.FlushAsync();
            long host = await HostOffsetAsync(image, 0);
            using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
                Assert.Equal(0, FAdvise((int)handle.DangerousGetHandle(), host, Run, PosixFadvDontNeed));

            // Not cached, and no readahead under way to wait for: left to the ordinary read, which reads it in one go.
            Assert.Null(image.TryPinFileRange(0, Run));
            var back = new byte[Run];
            await image.ReadAsync(0, back); // the ordinary read fills the cache
            using var pin = image.TryPinFileRange(0, Run);
            Assert.NotNull(pin);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private const int PosixFadvDontNeed = 4;

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int FAdvise(int fd, long offset, long length, int advice);

    private static async Task<long> HostOffsetAsync(Qcow2Image image, long guest)
    {
        await foreach (var extent in image.GetMapAsync(guest, Cluster))
            return extent.Offset ?? throw new InvalidOperationException($"guest {guest} has no host offset");
        throw new InvalidOperationException("empty map");
    }

    private static byte[] Pattern(int length, int seed) => Enumerable.Range(0, length).Select(i => (byte)(i * 31 + seed)).ToArray();
}
