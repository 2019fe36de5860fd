using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class CrashRecoveryTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task Flushed_writes_survive_an_abandoned_image_and_qemu_refuses_it_by_our_feature_name_until_recovered()
    {
        var path = _dir.File("crash.qcow2");
        var model = new byte[16 << 20];
        var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 65536 });
        var rng = new Random(3);
        for (int i = 0; i < 100; i++)
        {
            int len = rng.Next(1, 300_000);
            long off = rng.NextInt64(0, model.Length - len);
            var data = new byte[len];
            rng.NextBytes(data);
            await image.WriteAsync(off, data);
            data.CopyTo(model, off);
        }
        await image.FlushAsync();
        // Crash: the actor system goes away with no close and no checkpoint.
        await host.DisposeAsync();

        var info = QemuTools.QemuImg("info", path);
        Assert.NotEqual(0, info.ExitCode);
        Assert.Contains("Unsupported qcow2 feature(s): journal pending: run q2a recover", info.StdErr);

        await using (var host2 = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            await using var reopened = await host2.OpenAsync(path);
            var back = new byte[model.Length];
            await reopened.ReadAsync(0, back);
            Assert.Equal(model, back);
        }
        QemuTools.AssertCheckClean(path);
        var raw = _dir.File("model.raw");
        await File.WriteAllBytesAsync(raw, model);
        var cmp = QemuTools.QemuImg("compare", "-F", "raw", path, raw);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
    }

    [Fact]
    public async Task An_image_disposed_after_its_host_stopped_closes_at_once_reports_one_unclean_close_and_keeps_its_journal()
    {
        var path = _dir.File("late.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1 << 20 });
        var faults = new System.Collections.Concurrent.ConcurrentQueue<Qcow2ImageFault>();
        var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, OnFault = faults.Enqueue });
        var data = Enumerable.Repeat((byte)0x5a, 4096).ToArray();
        await image.WriteAsync(0, data);
        await image.FlushAsync();
        await host.DisposeAsync();

        // The actors are gone: closing must not wait for them (the bound only turns a hang into a failure).
        await image.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));

        var fault = Assert.Single(faults);
        Assert.Equal(Qcow2ImageFaultKind.UncleanClose, fault.Kind);
        Assert.True(File.Exists(path + ".journal"));
        await using var host2 = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        await using var reopened = await host2.OpenAsync(path);
        var back = new byte[4096];
        await reopened.ReadAsync(0, back);
        Assert.Equal(data, back);
    }
}
