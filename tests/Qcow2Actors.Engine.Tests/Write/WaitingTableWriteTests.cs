using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// A table operation that waits inside its table actor (its device write held) keeps the table to itself: writes to
/// the same table behind it, one into the very cluster it is allocating, run only once it has ended, so the cluster is
/// allocated once and every write lands. Table operations (writes, zeroes, discards, compressed writes) run outside
/// Akka's asynchronous handlers (L2TableActor.RunInline), so it is the actor's own stash that keeps this order.
/// </summary>
public sealed class WaitingTableWriteTests : HostedImageTests
{
    private const int Cluster = 65536;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [QemuFact]
    public async Task Writes_behind_a_waiting_allocating_write_run_after_it_and_the_cluster_is_allocated_once()
    {
        var (image, hold, path) = await OpenWithWriteHoldAsync("wait.qcow2", 0x11);
        var first = Enumerable.Repeat((byte)0xa1, 4096).ToArray();
        var sameCluster = Enumerable.Repeat((byte)0xb2, 4096).ToArray();
        var nextCluster = Enumerable.Repeat((byte)0xc3, 4096).ToArray();
        await using (image)
        {
            hold.Armed = true;
            var waiting = image.WriteAsync(Cluster, first).AsTask(); // allocates cluster 1; its data write is held
            await hold.Arrived.Task.WaitAsync(Timeout);
            var behind = image.WriteAsync(Cluster + 8192, sameCluster).AsTask(); // the same, still unmapped, cluster
            var other = image.WriteAsync(2L * Cluster, nextCluster).AsTask();    // another cluster of the same table
            Assert.False(behind.IsCompleted || other.IsCompleted, "a write ran while the table's write before it was waiting");

            hold.Release.TrySetResult();
            await Task.WhenAll(waiting, behind, other).WaitAsync(Timeout);
            await image.FlushAsync();

            var back = new byte[4096];
            await image.ReadAsync(Cluster, back);
            Assert.Equal(first, back);
            await image.ReadAsync(Cluster + 8192, back);
            Assert.Equal(sameCluster, back);
            await image.ReadAsync(2L * Cluster, back);
            Assert.Equal(nextCluster, back);
            await image.ReadAsync(Cluster + 4096, back);
            Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0) < 0, "the rest of the new cluster does not read as zeros");
        }
        QemuTools.AssertCheckClean(path);
    }

    [QemuFact]
    public async Task Zeroes_and_a_discard_behind_a_waiting_compressed_write_run_after_it()
    {
        var (image, hold, path) = await OpenWithWriteHoldAsync("wait-compressed.qcow2", 0x11);
        var compressible = Enumerable.Range(0, Cluster).Select(i => (byte)(i / 512)).ToArray();
        await using (image)
        {
            await image.WriteAsync(2L * Cluster, Enumerable.Repeat((byte)0xd4, Cluster).ToArray());
            await image.FlushAsync();

            hold.Armed = true;
            var waiting = image.WriteCompressedAsync(Cluster, compressible).AsTask(); // maps cluster 1; its data write is held
            await hold.Arrived.Task.WaitAsync(Timeout);
            var zeroes = image.WriteZeroesAsync(Cluster, 4096).AsTask(); // part of that compressed cluster
            var discard = image.DiscardAsync(2L * Cluster, Cluster).AsTask();
            Assert.False(zeroes.IsCompleted || discard.IsCompleted, "an operation ran while the table's compressed write before it was waiting");

            hold.Release.TrySetResult();
            await Task.WhenAll(waiting, zeroes, discard).WaitAsync(Timeout);
            await image.FlushAsync();

            var back = new byte[Cluster];
            await image.ReadAsync(Cluster, back);
            Assert.True(back.AsSpan(0, 4096).IndexOfAnyExcept((byte)0) < 0, "the zeroes did not land over the compressed data");
            Assert.True(back.AsSpan(4096).SequenceEqual(compressible.AsSpan(4096)), "the compressed cluster's other bytes changed");
            await image.ReadAsync(2L * Cluster, back);
            Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0) < 0, "the discarded cluster does not read as zeros");
        }
        QemuTools.AssertCheckClean(path);
    }
}
