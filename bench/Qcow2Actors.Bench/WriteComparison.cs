using System.Diagnostics;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Bench;

/// <summary>
/// <c>dotnet run -c Release -- --compare-writes [reps]</c>: the write patterns of
/// <see cref="WriteBenchmarks"/> through our API and through <c>qemu-img bench</c> (its own
/// "Run completed in" figure, so process start is not counted), each on a fresh 1 GiB image
/// with 64 KiB clusters, median of <c>reps</c> runs after one dropped warm-up run, printed side by side.
/// </summary>
internal static class WriteComparison
{
    private sealed record Scenario(string Name, int Count, int Size, Func<int, long> Offset, int Flush, string QemuSize, string? QemuStep, bool Overwrite);

    public static async Task<int> RunAsync(int reps)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"q2a-compare-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        var rng = new Random(7);
        long[] random = [.. Enumerable.Range(0, WriteBenchmarks.SmallWrites).Select(_ => rng.NextInt64(0, WriteBenchmarks.Size / 4096) * 4096)];
        const long stride = WriteBenchmarks.Stride;
        var scenarios = new[]
        {
            new Scenario("4K stride 64K allocating", WriteBenchmarks.SmallWrites, 4096, i => i * stride, 0, "4k", "64k", false),
            new Scenario("4K stride 64K allocating, flush/32", WriteBenchmarks.SmallWrites, 4096, i => i * stride, 32, "4k", "64k", false),
            new Scenario("4K random allocating (q2a) | stride (qemu)", WriteBenchmarks.SmallWrites, 4096, i => random[i], 0, "4k", "64k", false),
            new Scenario("4K random allocating, flush/32 (q2a) | stride (qemu)", WriteBenchmarks.SmallWrites, 4096, i => random[i], 32, "4k", "64k", false),
            new Scenario("1M sequential allocating", WriteBenchmarks.BigWrites, 1 << 20, i => i * (1L << 20), 0, "1M", null, false),
            new Scenario("4K random overwrite (q2a) | stride 68K (qemu)", WriteBenchmarks.SmallWrites, 4096, i => random[i], 0, "4k", "68k", true),
        };
        await using var host = ImageHost.Create();
        // Allocated images for the overwrite case: ours written through the engine, qemu's preallocated.
        string full = Path.Combine(dir, "full.qcow2"), fullQemu = Path.Combine(dir, "full-qemu.qcow2");
        var big = new byte[1 << 20];
        Array.Fill(big, (byte)0x5A);
        await using (var img = await host.CreateAsync(full, new Qcow2CreateOptions { Size = WriteBenchmarks.Size }))
            for (long p = 0; p < WriteBenchmarks.Size; p += big.Length) await img.WriteAsync(p, big);
        QemuBench.Create(fullQemu, WriteBenchmarks.Size, "preallocation=falloc");

        Console.WriteLine($"{"pattern (d16, 1 GiB image, 64 KiB clusters)",-54} {"q2a µs/op",10} {"q2a MB/s",9} {"qemu none µs/op",16} {"qemu none MB/s",15} {"qemu wb µs/op",14} {"qemu wb MB/s",13}");
        foreach (var s in scenarios)
        {
            var ours = new List<double>();
            var none = new List<double>();
            var wb = new List<double>();
            // Run -1 warms up (JIT, page cache) and is dropped.
            for (int r = -1; r < reps; r++)
            {
                if (r == 0) { ours.Clear(); none.Clear(); wb.Clear(); }
                var data = new byte[s.Size];
                Array.Fill(data, (byte)0xA5);
                if (s.Overwrite)
                {
                    await using var img = await host.OpenAsync(full, new Qcow2OpenOptions { ReadOnly = false });
                    var sw = Stopwatch.StartNew();
                    await WriteBenchmarks.WriteAll(img, s.Count, s.Offset, data, s.Flush);
                    ours.Add(sw.Elapsed.TotalSeconds);
                    none.Add(QemuBench.Run(fullQemu, "none", s.Count, s.QemuSize, s.QemuStep, s.Flush));
                    wb.Add(QemuBench.Run(fullQemu, "writeback", s.Count, s.QemuSize, s.QemuStep, s.Flush));
                    continue;
                }
                string path = Path.Combine(dir, "fresh.qcow2");
                await using (var img = await host.CreateAsync(path, new Qcow2CreateOptions { Size = WriteBenchmarks.Size }))
                {
                    var sw = Stopwatch.StartNew();
                    await WriteBenchmarks.WriteAll(img, s.Count, s.Offset, data, s.Flush);
                    ours.Add(sw.Elapsed.TotalSeconds);
                }
                Delete(path);
                foreach (var (cache, into) in new[] { ("none", none), ("writeback", wb) })
                {
                    QemuBench.Create(path, WriteBenchmarks.Size);
                    into.Add(QemuBench.Run(path, cache, s.Count, s.QemuSize, s.QemuStep, s.Flush));
                    Delete(path);
                }
            }
            double bytes = (double)s.Count * s.Size;
            string Us(List<double> t) => (Median(t) * 1e6 / s.Count).ToString("F1", CultureInfo.InvariantCulture);
            string Mbs(List<double> t) => (bytes / Median(t) / 1e6).ToString("F0", CultureInfo.InvariantCulture);
            Console.WriteLine($"{s.Name,-54} {Us(ours),10} {Mbs(ours),9} {Us(none),16} {Mbs(none),15} {Us(wb),14} {Mbs(wb),13}");
        }
        Directory.Delete(dir, recursive: true);
        return 0;
    }

    private static void Delete(string path)
    {
        File.Delete(path);
        File.Delete(path + ".journal");
    }

    private static double Median(List<double> v)
    {
        var s = v.Order().ToList();
        return s[s.Count / 2];
    }
}
