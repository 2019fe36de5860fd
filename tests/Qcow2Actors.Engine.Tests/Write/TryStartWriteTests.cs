using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// <see cref="Qcow2Image.TryStartWrite"/> starts only writes that allocate (all of them then goes through the
/// table actors, which complete it inline), and a started write lands exactly as <see cref="Qcow2Image.WriteAsync"/>
/// would; everything else is a false, never an exception.
/// </summary>
public sealed class TryStartWriteTests : HostedImageTests
{
    private const int Cluster = 4096;
    private const long DiskSize = 4L * 1024 * 1024;

    [Fact]
    public async Task Allocating_writes_started_on_the_callers_thread_read_back_and_survive_a_reopen()
    {
        var path = Dir.File("a.qcow2");
        var expected = new byte[DiskSize];
        await using (var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster }))
        {
            var rng = new Random(3);
            var writes = new List<ValueTask>();
            // Many at once, one 512-byte write into each of 64 clusters, some crossing into the next cluster.
            for (int i = 0; i < 64; i++)
            {
                long offset = (long)i * 7 * Cluster + rng.Next(0, 8) * 512;
                var data = new byte[i % 5 == 0 ? Cluster : 512];
                rng.NextBytes(data);
                data.CopyTo(expected.AsSpan((int)offset));
                Assert.True(image.TryStartWrite(offset, data, fua: false, default, out var write));
                writes.Add(write);
            }
            foreach (var write in writes) await write;
            var back = new byte[DiskSize];
            await image.ReadAsync(0, back);
            Assert.Equal(expected, back);
            await image.FlushAsync();
        }
        await using var reopened = await Host.OpenAsync(path);
        var again = new byte[DiskSize];
        await reopened.ReadAsync(0, again);
        Assert.Equal(expected, again);
    }

    [Fact]
    public async Task Owned_clusters_bad_ranges_and_closed_images_are_a_false_not_an_exception()
    {
        var image = await Host.CreateAsync(Dir.File("b.qcow2"), new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster });
        await image.WriteAsync(0, new byte[Cluster]);
        // Owned: overwritten in place by the ordinary path, on a thread that may wait.
        Assert.False(image.TryStartWrite(512, new byte[512], false, default, out _));
        Assert.False(image.TryStartWrite(DiskSize - 512, new byte[Cluster], false, default, out _));
        Assert.False(image.TryStartWrite(-Cluster, new byte[512], false, default, out _));
        Assert.False(image.TryStartWrite(Cluster, ReadOnlyMemory<byte>.Empty, false, default, out _));
        await image.DisposeAsync();
        Assert.False(image.TryStartWrite(Cluster, new byte[512], false, default, out _));
    }
}
