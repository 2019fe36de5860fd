using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Bench;

/// <summary>
/// Reads of a fully allocated 1 GiB qcow2 image (64 KiB clusters, written by qemu-io) through
/// <see cref="Qcow2Image"/>, beside the same bytes read from a raw file with RandomAccess: the
/// difference is the cost of the read path (mapping, L2 cache, async plumbing). Both files stay
/// in the page cache after the first pass, so this measures CPU overhead, not the disk.
/// </summary>
[MemoryDiagnoser]
public class ReadBenchmarks
{
    private const long Size = 1L << 30;
    private const int RandomReadsPerOp = 256;

    private string _dir = "";
    private Qcow2Image _image = null!;
    private SafeFileHandle _raw = null!;
    private readonly byte[] _big = new byte[1 << 20];
    private readonly byte[] _small = new byte[4096];
    private long[] _randomOffsets = [];
    private long _seqPos;

    [GlobalSetup]
    public async Task Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "q2a-bench-read");
        Directory.CreateDirectory(_dir);
        string img = Path.Combine(_dir, "full.qcow2"), raw = Path.Combine(_dir, "full.raw");
        if (!File.Exists(img) || !File.Exists(raw))
        {
            Run("qemu-img", "create", "-q", "-f", "qcow2", img, "1G");
            var args = new List<string>();
            for (int i = 0; i < 16; i++) { args.Add("-c"); args.Add($"write -P {i + 1} {i * 64}M 64M"); }
            args.Add(img);
            Run("qemu-io", [.. args]);
            Run("qemu-img", "convert", "-O", "raw", img, raw);
        }
        _image = await Qcow2Image.OpenAsync(img);
        _raw = File.OpenHandle(raw, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        var rng = new Random(1);
        _randomOffsets = Enumerable.Range(0, RandomReadsPerOp).Select(_ => rng.NextInt64(0, Size / 4096) * 4096).ToArray();
        // Warm the page cache and the L2 cache for both sides.
        for (long p = 0; p < Size; p += _big.Length)
        {
            await _image.ReadAsync(p, _big);
            await RandomAccess.ReadAsync(_raw, _big, p);
        }
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await _image.DisposeAsync();
        _raw.Dispose();
    }

    private long NextSequential()
    {
        long p = _seqPos;
        _seqPos = (p + _big.Length) % Size;
        return p;
    }

    [Benchmark(Description = "Read sequential 1 MiB: raw file")]
    [BenchmarkCategory("Sequential")]
    public ValueTask<int> RawSequential1M() => RandomAccess.ReadAsync(_raw, _big, NextSequential());

    [Benchmark(Description = "Read sequential 1 MiB: Qcow2Image")]
    [BenchmarkCategory("Sequential")]
    public ValueTask Qcow2Sequential1M() => _image.ReadAsync(NextSequential(), _big);

    [Benchmark(Description = "Read random 4 KiB x256: raw file", OperationsPerInvoke = RandomReadsPerOp)]
    [BenchmarkCategory("Random")]
    public async Task RawRandom4K()
    {
        foreach (var off in _randomOffsets) await RandomAccess.ReadAsync(_raw, _small, off);
    }

    [Benchmark(Description = "Read random 4 KiB x256: Qcow2Image", OperationsPerInvoke = RandomReadsPerOp)]
    [BenchmarkCategory("Random")]
    public async Task Qcow2Random4K()
    {
        foreach (var off in _randomOffsets) await _image.ReadAsync(off, _small);
    }

    private static void Run(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{tool} failed with exit {p.ExitCode}");
    }
}
