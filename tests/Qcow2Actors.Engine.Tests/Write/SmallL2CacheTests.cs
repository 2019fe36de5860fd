using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Any l2-cache-size works: with 4 KiB clusters one L2 table covers only 2 MiB, so random
/// writes over 16 GiB dirty a new table almost every time and the cache overflows constantly.
/// A table that must leave the cache is written back; nothing waits on it forever.
/// </summary>
public sealed class SmallL2CacheTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private const long DiskSize = 16L << 30;
    private const int Writes = 2000;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(128)]
    public async Task Random_writes_over_16_GiB_with_a_tiny_l2_cache_complete_and_check_clean(int cacheSize)
    {
        var path = _dir.File("c.qcow2");
        var rng = new Random(7 + cacheSize);
        // Last write wins per 4 KiB block; the blocks are aligned, so the model is a map.
        var model = new Dictionary<long, byte[]>();
        await using (var host = ImageHost.Create($"qcow2actors.engine.l2-cache-size = {cacheSize}\nqcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 4096 }))
        {
            for (int i = 0; i < Writes; i++)
            {
                long offset = rng.NextInt64(DiskSize / 4096) * 4096;
                var data = new byte[4096];
                rng.NextBytes(data);
                model[offset] = data;
                await image.WriteAsync(offset, data).AsTask().WaitAsync(Timeout);
                if (i % 100 == 99) await image.FlushAsync().AsTask().WaitAsync(Timeout);
            }
            await VerifyAsync(image, model);
        }
        QemuTools.AssertCheckClean(path);
        await using (var reopened = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = true }))
            await VerifyAsync(reopened, model);
    }

    private static async Task VerifyAsync(Qcow2Image image, Dictionary<long, byte[]> model)
    {
        var back = new byte[4096];
        foreach (var (offset, data) in model)
        {
            await image.ReadAsync(offset, back);
            Assert.True(data.AsSpan().SequenceEqual(back), $"block at {offset} differs");
        }
    }
}
