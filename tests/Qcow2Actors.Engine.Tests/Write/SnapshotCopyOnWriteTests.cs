using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class SnapshotCopyOnWriteTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData("cluster_size=65536")]
    [InlineData("cluster_size=4096,refcount_bits=8")]
    [InlineData("cluster_size=65536,extended_l2=on")]
    [InlineData("compat=0.10")]
    public async Task Writes_over_clusters_shared_with_a_qemu_snapshot_copy_them_and_leave_the_snapshot_intact(string options)
    {
        var path = _dir.File("s.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-o", options, path, "16M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 1 0 4M", "-c", "write -c -P 3 8M 64k", path).EnsureSuccess();
        QemuTools.QemuImg("snapshot", "-c", "snap1", path).EnsureSuccess();
        var before = _dir.File("before.raw");
        QemuTools.QemuImg("convert", "-O", "raw", path, before).EnsureSuccess();
        var model = await File.ReadAllBytesAsync(before);

        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.OpenAsync(path))
        {
            async Task Write(long offset, int length, byte value)
            {
                var data = Enumerable.Repeat(value, length).ToArray();
                await image.WriteAsync(offset, data);
                data.CopyTo(model, offset);
            }
            await Write(65536, 65536, 2);       // whole shared cluster
            await Write(3 << 20, 4096, 5);      // partial shared cluster: the rest is copied
            await Write(8 << 20, 4096, 4);      // partial compressed cluster
            await image.WriteZeroesAsync(1 << 20, 65536);
            Array.Clear(model, 1 << 20, 65536);
            await image.DiscardAsync(2 << 20, 131072);
            Array.Clear(model, 2 << 20, 131072);
            await image.FlushAsync();
        }

        QemuTools.AssertCheckClean(path);
        var expected = _dir.File("expected.raw");
        await File.WriteAllBytesAsync(expected, model);
        var cmp = QemuTools.QemuImg("compare", "-F", "raw", path, expected);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
        var snap = _dir.File("snap.raw");
        QemuTools.QemuImg("convert", "-l", "snap1", "-O", "raw", path, snap).EnsureSuccess();
        Assert.Equal(await File.ReadAllBytesAsync(before), await File.ReadAllBytesAsync(snap));
    }
}
