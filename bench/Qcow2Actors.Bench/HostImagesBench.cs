using System.Diagnostics;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Bench;

/// <summary>
/// <c>dotnet run -c Release --project bench/Qcow2Actors.Bench -- --host-images [images] [written] [writes-per-image] [metadata-cache]</c>:
/// the multi-tenant host's scale case (issue 9). Creates <c>images</c> qcow2 images (1 GiB, 4 KiB
/// clusters), opens all of them read-write in one <see cref="ImageHost"/>, writes <c>written</c> of them
/// (chosen at random) with random 4 KiB writes, and prints start-up time, RSS and the per-image cost;
/// then closes them and runs <c>qemu-img check</c> on every one.
/// </summary>
internal static class HostImagesBench
{
    private const long ImageSize = 1L << 30;
    private const int ClusterSize = 4096;

    public static async Task<int> RunAsync(string[] args)
    {
        int images = Arg(args, 0, 500);
        int written = Arg(args, 1, 50);
        int writesPerImage = Arg(args, 2, 1000);
        string cache = args.Length > 3 ? args[3] : "256MiB";
        string dir = Path.Combine(Path.GetTempPath(), $"q2a-host-images-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            Console.WriteLine($"q2a host scale: {images} images of {ImageSize >> 30} GiB, {ClusterSize / 1024} KiB clusters, one ImageHost; " +
                $"{written} written at random, {writesPerImage} random 4 KiB writes each; metadata-cache = {cache}");
            Console.WriteLine($"machine: {Environment.ProcessorCount} cores, .NET {Environment.Version}, server GC {System.Runtime.GCSettings.IsServerGC}, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
            var paths = Enumerable.Range(0, images).Select(i => Path.Combine(dir, $"img{i:D3}.qcow2")).ToArray();
            var sw = Stopwatch.StartNew();
            foreach (var p in paths) ImageCreator.Create(p, new Qcow2CreateOptions { Size = ImageSize, ClusterSize = ClusterSize });
            Console.WriteLine($"created {images} images in {sw.Elapsed.TotalSeconds:F2} s (not counted below)");

            await using var host = ImageHost.Create($"qcow2actors.host.metadata-cache = {cache}", "bench");
            // A warm-up open and close, so start-up measures the images and not the JIT.
            string warm = Path.Combine(dir, "warm.qcow2");
            ImageCreator.Create(warm, new Qcow2CreateOptions { Size = ImageSize, ClusterSize = ClusterSize });
            await using (var w = await host.OpenAsync(warm)) await w.WriteAsync(0, new byte[ClusterSize]);
            var baseline = Memory.Take();
            Console.WriteLine($"baseline (host running, nothing open): {baseline}");

            sw.Restart();
            var opened = new Qcow2Image[images];
            await Parallel.ForEachAsync(Enumerable.Range(0, images), new ParallelOptions { MaxDegreeOfParallelism = 8 },
                async (i, ct) => opened[i] = await host.OpenAsync(paths[i], null, ct));
            var openTime = sw.Elapsed;
            var afterOpen = Memory.Take();
            Console.WriteLine($"start-up: {images} images opened in {openTime.TotalSeconds:F2} s ({openTime.TotalMilliseconds / images:F2} ms per image)");
            Console.WriteLine($"after open: {afterOpen}");
            Console.WriteLine($"per-image cost, open and idle: RSS {(afterOpen.RssBytes - baseline.RssBytes) / images / 1024.0:F1} KiB, managed heap {(afterOpen.HeapBytes - baseline.HeapBytes) / images / 1024.0:F1} KiB");

            var random = new Random(500);
            var chosen = Enumerable.Range(0, images).OrderBy(_ => random.Next()).Take(written).ToArray();
            sw.Restart();
            await Parallel.ForEachAsync(chosen, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, ct) =>
            {
                var rng = new Random(i);
                var data = new byte[ClusterSize];
                for (int n = 0; n < writesPerImage; n++)
                {
                    Array.Fill(data, (byte)(n | 1));
                    await opened[i].WriteAsync(rng.NextInt64(ImageSize / ClusterSize) * ClusterSize, data, cancellationToken: ct);
                    if (n % 256 == 255) await opened[i].FlushAsync(ct);
                }
                await opened[i].FlushAsync(ct);
            });
            var writeTime = sw.Elapsed;
            var afterWrites = Memory.Take();
            int total = written * writesPerImage;
            Console.WriteLine($"writes: {total} random 4 KiB allocating writes to {written} images in {writeTime.TotalSeconds:F2} s ({total / writeTime.TotalSeconds:F0} writes/s)");
            Console.WriteLine($"after writes: {afterWrites}");
            var budget = host.MetadataBudget;
            if (budget is not null)
                Console.WriteLine($"metadata budget: {budget.UsedBytes / 1048576.0:F1} MiB used now, peak {budget.PeakBytes / 1048576.0:F1} MiB, limit {budget.LimitBytes / 1048576.0:F1} MiB");
            // What a written image costs beyond its L2 metadata (which the budget bounds): refcount blocks
            // (kept in memory, up to 512 KiB per GiB at 4 KiB clusters), journal records pending until a
            // checkpoint, its actors, and the GC's headroom for them.
            long metadata = budget?.UsedBytes ?? 0;
            Console.WriteLine($"per written image beyond the metadata budget: RSS {(afterWrites.RssBytes - afterOpen.RssBytes - metadata) / written / 1048576.0:F2} MiB, " +
                $"managed heap {(afterWrites.HeapBytes - afterOpen.HeapBytes - metadata) / written / 1048576.0:F2} MiB; GC committed {GC.GetGCMemoryInfo().TotalCommittedBytes / 1048576.0:F1} MiB");
            // The stated bound: the host with every image open and idle, plus the metadata budget, plus 4 MiB per written image.
            long bound = afterOpen.RssBytes + (budget?.LimitBytes ?? 0) + written * (4L << 20);
            Console.WriteLine($"RSS bound (after open + metadata-cache + 4 MiB per written image): {bound / 1048576.0:F1} MiB; peak RSS (VmHWM) {afterWrites.PeakRssBytes / 1048576.0:F1} MiB: {(afterWrites.PeakRssBytes <= bound ? "within" : "PAST")} the bound");

            sw.Restart();
            await Parallel.ForEachAsync(opened, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (img, _) => await img.DisposeAsync());
            Console.WriteLine($"shutdown: {images} images closed (checkpointed, journals removed) in {sw.Elapsed.TotalSeconds:F2} s");

            sw.Restart();
            int clean = 0;
            var failures = new List<string>();
            foreach (var p in paths)
            {
                var (exit, text) = Check(p);
                if (exit == 0) clean++;
                else failures.Add($"{Path.GetFileName(p)}: {text.Trim()}");
            }
            Console.WriteLine($"qemu-img check: {clean}/{images} clean ({sw.Elapsed.TotalSeconds:F1} s)");
            foreach (var f in failures.Take(5)) Console.WriteLine($"  {f}");
            return failures.Count == 0 ? 0 : 1;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static (int ExitCode, string Output) Check(string image)
    {
        var psi = new ProcessStartInfo("qemu-img") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("check");
        psi.ArgumentList.Add(image);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start qemu-img");
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout + stderr.Result);
    }

    private static int Arg(string[] args, int index, int fallback) =>
        args.Length > index ? int.Parse(args[index], CultureInfo.InvariantCulture) : fallback;

    private readonly record struct Memory(long RssBytes, long PeakRssBytes, long HeapBytes)
    {
        public static Memory Take()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            long rss = 0, hwm = 0;
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kib(line);
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Kib(line);
            }
            return new Memory(rss, hwm, GC.GetTotalMemory(false));
        }

        private static long Kib(string line) =>
            long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;

        public override string ToString() =>
            $"RSS {RssBytes / 1048576.0:F1} MiB (peak {PeakRssBytes / 1048576.0:F1} MiB), managed heap {HeapBytes / 1048576.0:F1} MiB";
    }
}
