using Akka.Configuration;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Engine.Tests.Read;

/// <summary>
/// One metadata budget (<c>qcow2actors.host.metadata-cache</c>) for the L2 tables cached and held
/// by table actors across every image of a host: with a budget far smaller than the images' tables,
/// random writes and reads still return what was written, the images check clean, and the host's
/// count of table memory stays within the budget (plus, at worst, each image's floor).
/// </summary>
public sealed class MetadataCacheBudgetTests(ITestOutputHelper output) : IDisposable
{
    private const int Cs = 4096;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static ImageHost NewHost(string budget) =>
        ImageHost.Create($"qcow2actors.engine.checkpoint-interval = 0s\nqcow2actors.host.metadata-cache = {budget}");

    // What the images may hold whatever the budget (their floors).
    private static long FloorBytes(int images) => images * MetadataCacheBudget.FloorBytes(Cs);

    [QemuFact]
    public async Task Random_writes_to_many_images_under_a_tiny_budget_read_back_right_and_table_memory_stays_within_it()
    {
        const int images = 8;
        const long size = 32 << 20; // 16 L2 tables per image: 128 in all, the budget holds about 60
        const long limit = 600 << 10;
        var paths = Enumerable.Range(0, images).Select(i => _dir.File($"d{i}.qcow2")).ToArray();
        foreach (var p in paths) ImageCreator.Create(p, new Qcow2CreateOptions { Size = size, ClusterSize = Cs });
        var models = paths.Select(_ => new byte[size / Cs]).ToArray(); // the byte each cluster is filled with
        await using (var host = NewHost("600KiB"))
        {
            var budget = host.MetadataBudget!;
            Assert.Equal(limit, budget.LimitBytes);
            var opened = new Qcow2Image[images];
            for (int i = 0; i < images; i++) opened[i] = await host.OpenAsync(paths[i]);
            Assert.Equal(images, budget.Images);
            await Parallel.ForEachAsync(Enumerable.Range(0, images), new ParallelOptions { MaxDegreeOfParallelism = images }, async (i, ct) =>
            {
                var random = new Random(i);
                var image = opened[i];
                var model = models[i];
                var buffer = new byte[Cs];
                for (int n = 0; n < 400; n++)
                {
                    long cluster = random.NextInt64(model.Length);
                    if (random.Next(3) == 0)
                    {
                        await image.ReadAsync(cluster * Cs, buffer, ct);
                        Assert.True(buffer.All(b => b == model[cluster]), $"image {i} cluster {cluster} reads {buffer[0]}, not {model[cluster]}");
                        continue;
                    }
                    byte value = (byte)random.Next(1, 256);
                    Array.Fill(buffer, value);
                    await image.WriteAsync(cluster * Cs, buffer, cancellationToken: ct);
                    model[cluster] = value;
                    if (n % 100 == 99) await image.FlushAsync(ct);
                }
            });
            output.WriteLine($"budget {budget.LimitBytes}, peak {budget.PeakBytes}, now {budget.UsedBytes}; floors come to {FloorBytes(images)}");
            // The budget covers every image's floor, so it is never passed.
            Assert.True(FloorBytes(images) <= limit);
            Assert.True(budget.PeakBytes <= budget.LimitBytes, $"table memory peaked at {budget.PeakBytes} bytes under a {budget.LimitBytes}-byte budget");
            for (int i = 0; i < images; i++)
            {
                var back = new byte[size];
                await opened[i].ReadAsync(0, back);
                for (long c = 0; c < models[i].Length; c++)
                    Assert.True(back.AsSpan((int)(c * Cs), Cs).IndexOfAnyExcept(models[i][c]) < 0, $"image {i} cluster {c} differs");
            }
            foreach (var image in opened) await image.DisposeAsync();
            Assert.Equal(0, budget.UsedBytes);
            Assert.Equal(0, budget.Images);
        }
        for (int i = 0; i < images; i++)
        {
            QemuTools.AssertCheckClean(paths[i]);
            var raw = new byte[size];
            for (long c = 0; c < models[i].Length; c++) Array.Fill(raw, models[i][c], (int)(c * Cs), Cs);
            QemuTools.AssertSameContent(paths[i], raw, _dir.Path);
        }
    }

    [QemuFact]
    public async Task A_hundred_images_open_in_one_host_keep_table_memory_within_the_budget()
    {
        const int images = 100;
        const long size = 8 << 20; // 4 L2 tables per image
        var paths = Enumerable.Range(0, images).Select(i => _dir.File($"h{i}.qcow2")).ToArray();
        foreach (var p in paths) ImageCreator.Create(p, new Qcow2CreateOptions { Size = size, ClusterSize = Cs });
        // Room for the floors of every image and a few tables more, far less than the 400 tables there are.
        long limit = FloorBytes(images) + 64 * Cs;
        await using (var host = NewHost($"{limit}"))
        {
            var budget = host.MetadataBudget!;
            var opened = new List<Qcow2Image>();
            foreach (var p in paths) opened.Add(await host.OpenAsync(p));
            var random = new Random(100);
            var data = new byte[Cs];
            for (int n = 0; n < 600; n++)
            {
                var image = opened[random.Next(10)]; // ten of them written
                long offset = random.NextInt64(size / Cs) * Cs;
                Array.Fill(data, (byte)(n | 1));
                await image.WriteAsync(offset, data);
                await opened[random.Next(images)].ReadAsync(random.NextInt64(size / Cs) * Cs, data);
                Assert.True(budget.UsedBytes <= limit, $"{budget.UsedBytes} bytes of tables under a {limit}-byte budget");
            }
            output.WriteLine($"budget {limit}, peak {budget.PeakBytes}");
            Assert.True(budget.PeakBytes <= limit, $"table memory peaked at {budget.PeakBytes} bytes under a {limit}-byte budget");
            foreach (var image in opened) await image.DisposeAsync();
            Assert.Equal(0, budget.UsedBytes);
        }
        foreach (var p in paths.Take(10)) QemuTools.AssertCheckClean(p);
    }

    [Fact]
    public async Task A_budget_of_zero_turns_the_shared_budget_off_and_a_bad_size_is_named()
    {
        await using (var host = NewHost("0"))
            Assert.Null(host.MetadataBudget);
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
            Assert.Equal(256L << 20, host.MetadataBudget!.LimitBytes);
        var error = Assert.Throws<ConfigurationException>(() => NewHost("lots"));
        Assert.Contains("qcow2actors.host.metadata-cache", error.Message);
    }
}
