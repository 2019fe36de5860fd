using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Blocking file I/O never runs on Akka's default dispatcher: an image whose disk stalls on
/// every fsync does not hold up another image of the same host. The host's default dispatcher
/// is given one thread, so any fsync, table write-back or recovery run on it would stop every
/// actor of every image until the stall ends.
/// </summary>
public sealed class SlowDiskIsolationTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static byte[] Bytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    [Fact]
    public async Task An_image_whose_fsync_stalls_does_not_delay_another_images_writes_and_flushes()
    {
        var slowPath = _dir.File("slow.qcow2");
        var fastPath = _dir.File("fast.qcow2");
        ImageCreator.Create(slowPath, new Qcow2CreateOptions { Size = 16 << 20, ClusterSize = 65536 });
        ImageCreator.Create(fastPath, new Qcow2CreateOptions { Size = 16 << 20, ClusterSize = 65536 });
        var gate = new FlushGate();
        await using var host = ImageHost.Create("""
            qcow2actors.engine.checkpoint-interval = 0s
            akka.actor.default-dispatcher {
              executor = fork-join-executor
              fork-join-executor { parallelism-min = 1, parallelism-factor = 1.0, parallelism-max = 1 }
            }
            """);
        var slow = await host.OpenAsync(slowPath, new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, writable) => new StallingFlushDevice(FileBlockDevice.Open(p, writable), gate),
        }).WaitAsync(Timeout);
        var fast = await host.OpenAsync(fastPath).WaitAsync(Timeout);
        try
        {
            var slowData = Bytes(200_000, 1);
            await slow.WriteAsync(0, slowData).AsTask().WaitAsync(Timeout);

            gate.Close();
            var slowFlush = slow.FlushAsync().AsTask();
            await gate.Entered.WaitAsync(Timeout);

            // While the slow image's fsync hangs: allocating writes (table actors, refcounts, journal)
            // and flushes of the other image complete.
            var model = new byte[16 << 20];
            for (int i = 0; i < 8; i++)
            {
                var data = Bytes(100_000, 10 + i);
                long offset = (long)i * (2 << 20) + 4096 * i;
                data.CopyTo(model, offset);
                await fast.WriteAsync(offset, data).AsTask().WaitAsync(Timeout);
                await fast.FlushAsync().AsTask().WaitAsync(Timeout);
            }
            Assert.False(slowFlush.IsCompleted, "the slow image's flush completed while its fsync was still stalled");
            Assert.True(gate.IsClosed);

            gate.Open();
            await slowFlush.WaitAsync(Timeout);
            Assert.False(slow.IsReadOnly, slow.ReadOnlyReason);

            var back = new byte[model.Length];
            await fast.ReadAsync(0, back).AsTask().WaitAsync(Timeout);
            Assert.True(model.AsSpan().SequenceEqual(back), "the fast image reads back differently");
            var slowBack = new byte[slowData.Length];
            await slow.ReadAsync(0, slowBack).AsTask().WaitAsync(Timeout);
            Assert.Equal(slowData, slowBack);
        }
        finally
        {
            gate.Open();
            await fast.DisposeAsync();
            await slow.DisposeAsync();
        }
    }
}
