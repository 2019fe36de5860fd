using System.Collections.Concurrent;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Write;

namespace Qcow2Actors.Bench;

/// <summary>
/// What the overlap check costs the owned-cluster fast path: <see cref="WriteBenchmarks"/>'
/// 4 KiB random overwrites (16 in flight, 1 GiB image, 64 KiB clusters, every cluster
/// allocated) with the check on and off in the same run (an internal switch the engine never
/// turns off itself).
/// </summary>
[SimpleJob(RunStrategy.Monitoring, launchCount: 2, warmupCount: 2, iterationCount: 30, invocationCount: 1)]
[MemoryDiagnoser]
public class OverlapCheckBenchmarks
{
    private string _dir = "";
    private ImageHost _host = null!;
    private Qcow2Image _image = null!;
    private readonly byte[] _small = Enumerable.Repeat((byte)0xA5, 4096).ToArray();
    private long[] _random = [];

    [Params(true, false)]
    public bool OverlapCheck { get; set; }

    [GlobalSetup]
    public async Task Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), $"q2a-bench-overlap-{Environment.ProcessId}");
        Directory.CreateDirectory(_dir);
        _host = ImageHost.Create();
        var rng = new Random(7);
        _random = [.. Enumerable.Range(0, WriteBenchmarks.SmallWrites).Select(_ => rng.NextInt64(0, WriteBenchmarks.Size / 4096) * 4096)];
        string path = Path.Combine(_dir, "full.qcow2");
        var big = new byte[1 << 20];
        await using (var img = await _host.CreateAsync(path, new Qcow2CreateOptions { Size = WriteBenchmarks.Size }))
            for (long p = 0; p < WriteBenchmarks.Size; p += big.Length) await img.WriteAsync(p, big);
        _image = await _host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        _image.WriteContext!.Metadata.Enabled = OverlapCheck;
        // Cache every L2 table once, so every measured write takes the fast path.
        for (long p = 0; p < WriteBenchmarks.Size; p += 512L << 20) await _image.ReadAsync(p, new byte[512]);
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await _image.DisposeAsync();
        await _host.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    [Benchmark(Description = "q2a: 4K random overwrite, d16", OperationsPerInvoke = WriteBenchmarks.SmallWrites)]
    public Task Random4KOverwrite() => WriteBenchmarks.WriteAll(_image, WriteBenchmarks.SmallWrites, i => _random[i], _small, flushEvery: 0);
}

/// <summary>
/// The lookup alone, per guest write of <see cref="WriteSize"/> bytes that hits no metadata:
/// the lock-free bitmap the engine uses beside a per-cluster ConcurrentDictionary probe (what
/// the map was before), on a map shaped like a 1 TiB image's (64 KiB clusters, an L2 table per
/// 512 MiB, a refcount block per 2 GiB).
/// </summary>
[ShortRunJob]
public class OverlapLookupBenchmarks
{
    private const int Bits = 16;
    private const int Lookups = 4096;
    private readonly MetadataMap _map = new(Bits);
    private readonly ConcurrentDictionary<long, MetadataKind> _dictionary = new();
    private long[] _offsets = [];

    [Params(4096, 1 << 20)]
    public int WriteSize { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        const long disk = 1L << 40;
        void Add(long offset, MetadataKind kind)
        {
            _map.Add(offset, 1 << Bits, kind);
            _dictionary[offset >> Bits] = kind;
        }
        Add(0, MetadataKind.Header);
        Add(1L << Bits, MetadataKind.RefcountTable);
        Add(2L << Bits, MetadataKind.L1Table);
        // Tables spread through the data, as allocation leaves them.
        for (long g = 0; g < disk; g += 512L << 20) Add(g + (3L << Bits), MetadataKind.L2Table);
        for (long g = 0; g < disk; g += 2L << 30) Add(g + (4L << Bits), MetadataKind.RefcountBlock);
        var rng = new Random(7);
        // Data clusters (never a table's): the common case, a miss.
        var offsets = new List<long>(Lookups);
        while (offsets.Count < Lookups)
        {
            long o = (rng.NextInt64(5, (disk - WriteSize) >> Bits) << Bits) + 4096 * rng.Next(0, 16);
            if (_map.FindData(o, WriteSize) is null) offsets.Add(o);
        }
        _offsets = [.. offsets];
    }

    [Benchmark(Baseline = true, Description = "ConcurrentDictionary probe per cluster", OperationsPerInvoke = Lookups)]
    public int Dictionary()
    {
        int hits = 0;
        foreach (long o in _offsets)
            for (long c = o >> Bits; c <= (o + WriteSize - 1) >> Bits; c++)
                if (_dictionary.ContainsKey(c)) hits++;
        return hits;
    }

    [Benchmark(Description = "MetadataMap.FindData (bitmap)", OperationsPerInvoke = Lookups)]
    public int Bitmap()
    {
        int hits = 0;
        foreach (long o in _offsets)
            if (_map.FindData(o, WriteSize) is not null) hits++;
        return hits;
    }
}
