using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class ResizeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData(512, 2)]
    [InlineData(65536, 3)]
    [InlineData(4096, 3)]
    public async Task Growing_past_the_L1_table_moves_it_and_keeps_every_byte(int clusterSize, int version)
    {
        var path = _dir.File("r.qcow2");
        long small = 1 << 20, large = 64L << 20;
        var model = new byte[large];
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            await using (var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = small, ClusterSize = clusterSize, Version = version }))
            {
                var head = Enumerable.Repeat((byte)0x31, 100_000).ToArray();
                await image.WriteAsync(1000, head);
                head.CopyTo(model, 1000);
                await image.ResizeAsync(large);
                Assert.Equal(large, image.VirtualSize);
                var tail = Enumerable.Repeat((byte)0x42, 70_000).ToArray();
                await image.WriteAsync(large - tail.Length, tail);
                tail.CopyTo(model, large - tail.Length);
                await image.FlushAsync();
            }
        }
        QemuTools.AssertCheckClean(path);
        var raw = _dir.File("model.raw");
        await File.WriteAllBytesAsync(raw, model);
        var cmp = QemuTools.QemuImg("compare", "-F", "raw", path, raw);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
        Assert.Contains(version == 2 ? "compat: 0.10" : "compat: 1.1", QemuTools.QemuImg("info", path).StdOut);
    }

    [QemuFact]
    public async Task A_resize_survives_a_crash_right_after_it()
    {
        var path = _dir.File("rc.qcow2");
        var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = 512 });
        await image.ResizeAsync(32 << 20);
        await image.WriteAsync((32 << 20) - 4096, Enumerable.Repeat((byte)7, 4096).ToArray());
        await image.FlushAsync();
        await host.DisposeAsync(); // crash: no close

        await using (var host2 = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var reopened = await host2.OpenAsync(path))
        {
            Assert.Equal(32 << 20, reopened.VirtualSize);
            var back = new byte[4096];
            await reopened.ReadAsync((32 << 20) - 4096, back);
            Assert.All(back, b => Assert.Equal(7, b));
        }
        QemuTools.AssertCheckClean(path);
    }
}
