using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Tests.Device;

namespace Qcow2Actors.Engine.Tests.Read;

/// <summary>
/// <see cref="Qcow2Image.TryStartRead"/> starts only reads of stored data in one run, delivers exactly what
/// <see cref="Qcow2Image.ReadAsync"/> reads, and declines everything else without starting anything.
/// </summary>
public sealed class TryStartReadTests : HostedImageTests
{
    private const int Cluster = 4096;
    private const long DiskSize = 4L * 1024 * 1024;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private sealed class Completion : IReadCompletion
    {
        private readonly TaskCompletionSource<Exception?> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public Task<Exception?> Task => _done.Task;
        public void OnReadCompleted(Exception? error) => _done.TrySetResult(error);
    }

    [IoUringFact]
    public async Task A_started_read_of_stored_data_delivers_what_ReadAsync_reads()
    {
        await using var image = await Host.CreateAsync(Dir.File("a.qcow2"), new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster });
        var data = new byte[8 * Cluster];
        new Random(9).NextBytes(data);
        await image.WriteAsync(0, data);
        await image.FlushAsync();

        var random = new Random(10);
        for (int i = 0; i < 50; i++)
        {
            int count = random.Next(1, Cluster);
            long offset = random.Next(0, 8) * (long)Cluster + random.Next(0, Cluster - count + 1);
            var expected = new byte[count];
            await image.ReadAsync(offset, expected);
            var buffer = new byte[count + 10];
            var done = new Completion();
            Assert.True(image.TryStartRead(offset, buffer, 3, count, done));
            Assert.Null(await done.Task.WaitAsync(Bound));
            Assert.Equal(expected, buffer.AsSpan(3, count).ToArray());
        }
    }

    [Fact]
    public async Task Unwritten_space_ranges_outside_the_disk_and_closed_images_are_not_started()
    {
        var image = await Host.CreateAsync(Dir.File("b.qcow2"), new Qcow2CreateOptions { Size = DiskSize, ClusterSize = Cluster });
        await image.WriteAsync(0, new byte[Cluster].Select(_ => (byte)5).ToArray());
        var buffer = new byte[2 * Cluster];
        var done = new Completion();
        Assert.False(image.TryStartRead(2 * Cluster, buffer, 0, Cluster, done)); // never written: not stored data
        Assert.False(image.TryStartRead(0, buffer, 0, 2 * Cluster, done)); // data, then unwritten: two runs
        Assert.False(image.TryStartRead(DiskSize - 512, buffer, 0, Cluster, done));
        Assert.False(image.TryStartRead(0, buffer, Cluster + 1, Cluster, done)); // does not fit the buffer
        await image.DisposeAsync();
        Assert.False(image.TryStartRead(0, buffer, 0, Cluster, done));
        Assert.False(done.Task.IsCompleted);
    }
}
