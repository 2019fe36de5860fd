using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Engine.Tests.Read;

/// <summary>
/// <see cref="Qcow2Image.TryReadNow"/> answers only what it can answer without waiting, and then exactly
/// what <see cref="Qcow2Image.ReadAsync"/> reads; everything else is a false, never an exception.
/// </summary>
public sealed class TryReadNowTests : HostedImageTests
{
    private const int Cluster = 4096;
    private const long DiskSize = 4L * 1024 * 1024;

    [Fact]
    public async Task A_true_answer_holds_the_bytes_ReadAsync_reads()
    {
        await using var image = await Host.CreateAsync(Dir.File("a.qcow2"), new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster });
        var data = new byte[3 * Cluster];
        new Random(8).NextBytes(data);
        await image.WriteAsync(Cluster + 512, data);
        await image.WriteZeroesAsync(8 * Cluster, 2 * Cluster);

        int answered = 0;
        // Written data, a range crossing into unwritten space, zeroed clusters, never-written space.
        foreach (var (offset, length) in new (long, int)[] { (Cluster + 512, 3 * Cluster), (3 * Cluster, 2 * Cluster), (8 * Cluster, 2 * Cluster), (2L * 1024 * 1024, Cluster) })
        {
            var now = new byte[length];
            now.AsSpan().Fill(0xEE);
            var expected = new byte[length];
            await image.ReadAsync(offset, expected);
            if (!image.TryReadNow(offset, now)) continue;
            answered++;
            Assert.Equal(expected, now);
        }
        // Space no L1 entry maps reads as zeros with no I/O at all: that one is always answered.
        Assert.True(answered >= 1);
        var unmapped = new byte[Cluster];
        unmapped.AsSpan().Fill(0xEE);
        Assert.True(image.TryReadNow(DiskSize - Cluster, unmapped));
        Assert.All(unmapped, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Ranges_outside_the_disk_and_closed_images_are_a_false_not_an_exception()
    {
        var image = await Host.CreateAsync(Dir.File("b.qcow2"), new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster });
        var buffer = new byte[Cluster];
        Assert.False(image.TryReadNow(DiskSize - 512, buffer));
        Assert.False(image.TryReadNow(-Cluster, buffer));
        Assert.False(image.TryReadNow(0, Span<byte>.Empty));
        await image.DisposeAsync();
        Assert.False(image.TryReadNow(0, buffer));
    }

    [Fact]
    public async Task Unallocated_space_over_a_backing_file_is_left_to_the_ordinary_read()
    {
        var basePath = Dir.File("base.qcow2");
        await using (var backing = await Host.CreateAsync(basePath, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster }))
            await backing.WriteAsync(0, new byte[Cluster].Select(_ => (byte)7).ToArray());
        await using var image = await Host.CreateAsync(Dir.File("top.qcow2"),
            new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster, BackingFile = basePath, BackingFormat = "qcow2" });
        var buffer = new byte[Cluster];
        Assert.False(image.TryReadNow(0, buffer));
        await image.ReadAsync(0, buffer);
        Assert.All(buffer, b => Assert.Equal(7, b));
    }
}
