using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Bench;

/// <summary>
/// The write path through the public API (<see cref="ImageHost"/>, <see cref="Qcow2Image"/>),
/// 16 requests in flight as <c>qemu-img bench -d 16</c> keeps, on a 1 GiB image with 64 KiB
/// clusters: 4 KiB allocating writes (random, and qemu-img bench's strided pattern, each write
/// in a new cluster) with and without a flush every 32 writes, 1 MiB sequential allocating writes,
/// and 4 KiB random overwrites of an allocated image. Every allocating run gets a fresh image
/// (Monitoring strategy, one invocation per iteration). Beside each, the same pattern through
/// <c>qemu-img bench</c> as an external process (its figure includes process start, a few ms;
/// <see cref="WriteComparison"/> prints qemu-img's own timing side by side without it).
/// </summary>
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5, invocationCount: 1)]
[MemoryDiagnoser]
public class WriteBenchmarks
{
    public const long Size = 1L << 30;
    public const int Depth = 16;
    public const int SmallWrites = 4096;
    public const int BigWrites = 256;
    public const long Stride = 64 * 1024;

    private string _dir = "";
    private ImageHost _host = null!;
    private Qcow2Image? _image;
    private Qcow2Image? _full;
    private string _fullPath = "";
    private string _fresh = "";
    private readonly byte[] _small = Enumerable.Repeat((byte)0xA5, 4096).ToArray();
    private readonly byte[] _big = Enumerable.Repeat((byte)0x5A, 1 << 20).ToArray();
    private long[] _random = [];

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"q2a-bench-write-{Environment.ProcessId}");
        Directory.CreateDirectory(_dir);
        _host = ImageHost.Create();
        var rng = new Random(7);
        _random = [.. Enumerable.Range(0, SmallWrites).Select(_ => rng.NextInt64(0, Size / 4096) * 4096)];
        _fullPath = Path.Combine(_dir, "full.qcow2");
    }

    [GlobalSetup(Target = nameof(Random4KOverwrite))]
    public async Task SetupOverwrite()
    {
        Setup();
        // Every cluster allocated through the engine, then reopened: overwrites take the owned-cluster fast path.
        await using (var img = await _host.CreateAsync(_fullPath, new Qcow2CreateOptions { Size = Size }))
            for (long p = 0; p < Size; p += _big.Length) await img.WriteAsync(p, _big);
        _full = await _host.OpenAsync(_fullPath, new Qcow2OpenOptions { ReadOnly = false });
    }

    [GlobalSetup(Target = nameof(QemuStrided4KOverwrite))]
    public void SetupQemuOverwrite()
    {
        Setup();
        QemuBench.Create(_fullPath, Size, "preallocation=falloc");
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        if (_full is not null) await _full.DisposeAsync();
        await _host.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private string NewPath() => Path.Combine(_dir, $"fresh-{Guid.NewGuid():N}.qcow2");

    [IterationSetup(Targets = [nameof(Random4KAllocating), nameof(Random4KAllocatingFlush32), nameof(Strided4KAllocating),
        nameof(Strided4KAllocatingFlush32), nameof(Sequential1MAllocating)])]
    public void FreshImage()
    {
        _fresh = NewPath();
        _image = _host.CreateAsync(_fresh, new Qcow2CreateOptions { Size = Size }).GetAwaiter().GetResult();
    }

    [IterationCleanup(Targets = [nameof(Random4KAllocating), nameof(Random4KAllocatingFlush32), nameof(Strided4KAllocating),
        nameof(Strided4KAllocatingFlush32), nameof(Sequential1MAllocating)])]
    public void CloseFresh()
    {
        _image!.DisposeAsync().AsTask().GetAwaiter().GetResult();
        DeleteImage(_fresh);
    }

    [IterationSetup(Targets = [nameof(QemuStrided4KAllocating), nameof(QemuStrided4KAllocatingFlush32), nameof(QemuSequential1MAllocating),
        nameof(QemuStrided4KAllocatingWriteback), nameof(QemuStrided4KAllocatingFlush32Writeback)])]
    public void FreshQemuImage()
    {
        _fresh = NewPath();
        QemuBench.Create(_fresh, Size);
    }

    [IterationCleanup(Targets = [nameof(QemuStrided4KAllocating), nameof(QemuStrided4KAllocatingFlush32), nameof(QemuSequential1MAllocating),
        nameof(QemuStrided4KAllocatingWriteback), nameof(QemuStrided4KAllocatingFlush32Writeback)])]
    public void DeleteQemuImage() => DeleteImage(_fresh);

    private static void DeleteImage(string path)
    {
        File.Delete(path);
        File.Delete(path + ".journal");
    }

    // ---------------------------------------------------------------- ours

    [Benchmark(Description = "q2a: 4K random allocating, d16", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4K")]
    public Task Random4KAllocating() => WriteAll(_image!, SmallWrites, i => _random[i], _small, flushEvery: 0);

    [Benchmark(Description = "q2a: 4K random allocating, d16, flush/32", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4KFlush")]
    public Task Random4KAllocatingFlush32() => WriteAll(_image!, SmallWrites, i => _random[i], _small, flushEvery: 32);

    [Benchmark(Description = "q2a: 4K stride 64K allocating, d16", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4K")]
    public Task Strided4KAllocating() => WriteAll(_image!, SmallWrites, i => i * Stride, _small, flushEvery: 0);

    [Benchmark(Description = "q2a: 4K stride 64K allocating, d16, flush/32", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4KFlush")]
    public Task Strided4KAllocatingFlush32() => WriteAll(_image!, SmallWrites, i => i * Stride, _small, flushEvery: 32);

    [Benchmark(Description = "q2a: 1M sequential allocating, d16", OperationsPerInvoke = BigWrites)]
    [BenchmarkCategory("Seq1M")]
    public Task Sequential1MAllocating() => WriteAll(_image!, BigWrites, i => i * (long)_big.Length, _big, flushEvery: 0);

    [Benchmark(Description = "q2a: 4K random overwrite, d16", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Overwrite4K")]
    public Task Random4KOverwrite() => WriteAll(_full!, SmallWrites, i => _random[i], _small, flushEvery: 0);

    /// <summary>
    /// Keeps <see cref="Depth"/> writes in flight; with <paramref name="flushEvery"/> it drains the
    /// queue and flushes after every that many writes, as qemu-img bench --flush-interval does.
    /// </summary>
    internal static async Task WriteAll(Qcow2Image image, int count, Func<int, long> offset, byte[] data, int flushEvery)
    {
        var inFlight = new Task[Depth];
        int issued = 0;
        while (issued < count)
        {
            int batch = flushEvery > 0 ? Math.Min(flushEvery, count - issued) : count - issued;
            int end = issued + batch;
            int slot = 0;
            for (int i = issued; i < end; i++)
            {
                if (inFlight[slot] is { } prior) await prior.ConfigureAwait(false);
                inFlight[slot] = image.WriteAsync(offset(i) % Size, data).AsTask();
                slot = (slot + 1) % Depth;
            }
            for (int s = 0; s < Depth; s++)
                if (inFlight[s] is { } t) { await t.ConfigureAwait(false); inFlight[s] = null!; }
            if (flushEvery > 0) await image.FlushAsync().ConfigureAwait(false);
            issued = end;
        }
    }

    // ---------------------------------------------------------------- qemu-img bench, the same patterns

    [Benchmark(Description = "qemu-img bench -t none: 4K stride 64K allocating, d16", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4K")]
    public void QemuStrided4KAllocating() => QemuBench.Run(_fresh, "none", SmallWrites, "4k", "64k", 0);

    [Benchmark(Description = "qemu-img bench -t none: 4K stride 64K allocating, d16, flush/32", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4KFlush")]
    public void QemuStrided4KAllocatingFlush32() => QemuBench.Run(_fresh, "none", SmallWrites, "4k", "64k", 32);

    [Benchmark(Description = "qemu-img bench -t writeback: 4K stride 64K allocating, d16", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4K")]
    public void QemuStrided4KAllocatingWriteback() => QemuBench.Run(_fresh, "writeback", SmallWrites, "4k", "64k", 0);

    [Benchmark(Description = "qemu-img bench -t writeback: 4K stride 64K allocating, d16, flush/32", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Alloc4KFlush")]
    public void QemuStrided4KAllocatingFlush32Writeback() => QemuBench.Run(_fresh, "writeback", SmallWrites, "4k", "64k", 32);

    [Benchmark(Description = "qemu-img bench -t none: 1M sequential allocating, d16", OperationsPerInvoke = BigWrites)]
    [BenchmarkCategory("Seq1M")]
    public void QemuSequential1MAllocating() => QemuBench.Run(_fresh, "none", BigWrites, "1M", null, 0);

    [Benchmark(Description = "qemu-img bench -t none: 4K stride 64K overwrite, d16", OperationsPerInvoke = SmallWrites)]
    [BenchmarkCategory("Overwrite4K")]
    public void QemuStrided4KOverwrite() => QemuBench.Run(_fullPath, "none", SmallWrites, "4k", "68k", 0);
}
