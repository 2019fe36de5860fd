using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class WriteEngineTests : HostedImageTests
{
    [QemuFact]
    public async Task Writes_survive_a_clean_close_and_qemu_reads_them()
    {
        var path = Dir.File("w.qcow2");
        var model = new byte[8 << 20];
        await using (var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length }))
        {
            var rng = new Random(1);
            for (int i = 0; i < 200; i++)
            {
                int len = rng.Next(1, 200_000);
                long off = rng.NextInt64(0, model.Length - len);
                var data = new byte[len];
                rng.NextBytes(data);
                await image.WriteAsync(off, data);
                data.CopyTo(model, off);
                if (i % 50 == 0) await image.FlushAsync();
            }
            var back = new byte[model.Length];
            await image.ReadAsync(0, back);
            Assert.Equal(model, back);
        }
        QemuTools.AssertCheckClean(path);
        QemuTools.AssertSameContent(path, model, Dir.Path);
    }

    [QemuFact]
    public async Task Zeroes_and_discards_read_back_as_zeros_and_leave_no_leaks()
    {
        var path = Dir.File("z.qcow2");
        var model = new byte[4 << 20];
        await using (var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 4096 }))
        {
            new Random(2).NextBytes(model);
            await image.WriteAsync(0, model);
            await image.WriteZeroesAsync(4096, 3 * 4096, unmap: true);
            await image.WriteZeroesAsync(100_000, 50_000);
            await image.DiscardAsync(1 << 20, 1 << 20);
            Array.Clear(model, 4096, 3 * 4096);
            Array.Clear(model, 100_000, 50_000);
            Array.Clear(model, 1 << 20, 1 << 20);
            await image.FlushAsync();
        }
        QemuTools.AssertCheckClean(path);
        QemuTools.AssertSameContent(path, model, Dir.Path);
    }
}
