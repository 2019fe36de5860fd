using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class PassivationTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData("qcow2actors.engine.table-idle-timeout = 50ms")]
    [InlineData("qcow2actors.engine.max-live-table-actors = 2")]
    public async Task Table_actors_passivated_while_writes_keep_coming_lose_nothing(string hocon)
    {
        var path = _dir.File("p.qcow2");
        // 4 KiB clusters: one L2 table covers 2 MiB, so 16 MiB spans 8 table actors.
        var model = new byte[16 << 20];
        // The engine's idle timers run on this clock: the test moves it between rounds, so table actors
        // go idle (and are passivated) while the next round's writes arrive.
        var time = new FakeTimeProvider();
        await using (var host = ImageHost.Create(hocon + "\nqcow2actors.engine.checkpoint-interval = 0s\nqcow2actors.engine.checkpoint-records = 200", timeProvider: time))
        await using (var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 4096 }))
        {
            var rng = new Random(5);
            for (int round = 0; round < 30; round++)
            {
                var pending = new List<Task>();
                for (int i = 0; i < 8; i++)
                {
                    int len = rng.Next(1, 20_000);
                    // Disjoint slots per write in a round, so the model does not depend on completion order.
                    long off = (long)i * (2 << 20) + rng.Next(0, (2 << 20) - len);
                    var data = new byte[len];
                    rng.NextBytes(data);
                    data.CopyTo(model, off);
                    pending.Add(image.WriteAsync(off, data).AsTask());
                }
                await Task.WhenAll(pending).WaitAsync(Timeout);
                if (round % 5 == 0) await image.FlushAsync().AsTask().WaitAsync(Timeout);
                time.Advance(TimeSpan.FromMilliseconds(rng.Next(0, 120)));
            }
            var back = new byte[model.Length];
            await image.ReadAsync(0, back);
            Assert.True(model.AsSpan().SequenceEqual(back), "read-back differs from the model");
        }
        QemuTools.AssertCheckClean(path);
        var raw = _dir.File("model.raw");
        await File.WriteAllBytesAsync(raw, model);
        var cmp = QemuTools.QemuImg("compare", "-F", "raw", path, raw);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
    }
}
