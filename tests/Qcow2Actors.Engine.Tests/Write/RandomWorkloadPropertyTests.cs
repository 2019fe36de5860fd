using CsCheck;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Random operation sequences (write, zero with and without unmap, discard, flush,
/// close/reopen) over random image options, against a byte-array model. Every image left
/// behind must pass qemu-img check with 0 errors and 0 leaks and compare equal to the model.
/// </summary>
public sealed class RandomWorkloadPropertyTests
{
    private enum Op { Write, Zero, ZeroUnmap, Discard, Flush, Reopen, Checkpoint }

    private sealed record Step(Op Op, long Offset, int Length, byte Seed);

    private sealed record Case(int ClusterBits, int RefcountBits, int Version, bool ExtendedL2, bool Backing, bool Preallocate, long Size, Step[] Steps)
    {
        public override string ToString() =>
            $"cluster_bits={ClusterBits} refcount_bits={RefcountBits} v{Version} extended_l2={ExtendedL2} backing={Backing} prealloc={Preallocate} size={Size} steps=[{string.Join(", ", Steps.Select(s => $"{s.Op}@{s.Offset}+{s.Length}"))}]";
    }

    private static readonly Gen<Case> Cases =
        from clusterBits in Gen.Int[9, 17]
        from refcountOrder in Gen.Int[0, 6]
        from v2 in Gen.Int[0, 5]
        from extended in Gen.Bool
        from backing in Gen.Bool
        from prealloc in Gen.Int[0, 5]
        from sizeKb in Gen.Int[64, 2048]
        from steps in GenSteps(sizeKb * 1024L).Array[1, 30]
        let version = v2 == 0 ? 2 : 3
        let ext = version == 3 && extended && clusterBits >= 14
        select new Case(clusterBits, version == 2 ? 16 : 1 << refcountOrder, version, ext, backing,
            prealloc == 0 && (!backing || ext), sizeKb * 1024L, steps);

    private static Gen<Step> GenSteps(long size) =>
        from op in Gen.Int[0, 99]
        from offset in Gen.Long[0, size - 1]
        from length in Gen.Int[1, 96 * 1024]
        from seed in Gen.Byte
        select new Step(op switch
        {
            < 55 => Op.Write,
            < 63 => Op.Zero,
            < 71 => Op.ZeroUnmap,
            < 80 => Op.Discard,
            < 90 => Op.Flush,
            < 95 => Op.Reopen,
            _ => Op.Checkpoint,
        }, offset, (int)Math.Min(length, size - offset), seed);

    [QemuFact]
    public void Random_workloads_leave_check_clean_images_equal_to_the_model()
    {
        Cases.Sample(c => Run(c).GetAwaiter().GetResult(), iter: 25, threads: 1);
    }

    private static async Task Run(Case c)
    {
        using var dir = new TempDir();
        var path = dir.File("p.qcow2");
        var model = new byte[c.Size];
        string? backing = null;
        byte[] backingBytes = [];
        if (c.Backing)
        {
            backing = dir.File("base.raw");
            // A backing file shorter than the image: past its end the overlay reads zeros.
            var baseBytes = new byte[c.Size * 2 / 3];
            new Random(c.Steps.Length).NextBytes(baseBytes);
            await File.WriteAllBytesAsync(backing, baseBytes);
            baseBytes.CopyTo(model, 0);
            backingBytes = baseBytes;
        }
        var options = new Qcow2CreateOptions
        {
            Size = c.Size, ClusterSize = 1 << c.ClusterBits, RefcountBits = c.RefcountBits, Version = c.Version,
            ExtendedL2 = c.ExtendedL2, BackingFile = backing is null ? null : "base.raw", BackingFormat = backing is null ? null : "raw",
            Preallocation = c.Preallocate ? Preallocation.Metadata : Preallocation.Off,
        };
        await using var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s\nqcow2actors.engine.checkpoint-records = 500");
        var image = await host.CreateAsync(path, options);
        try
        {
            foreach (var s in c.Steps)
            {
                switch (s.Op)
                {
                    case Op.Write:
                        var data = Pattern(s.Length, s.Seed);
                        await image.WriteAsync(s.Offset, data);
                        data.CopyTo(model, s.Offset);
                        break;
                    case Op.Zero:
                    case Op.ZeroUnmap:
                        await image.WriteZeroesAsync(s.Offset, s.Length, unmap: s.Op == Op.ZeroUnmap);
                        Array.Clear(model, (int)s.Offset, s.Length);
                        break;
                    case Op.Discard:
                        await image.DiscardAsync(s.Offset, s.Length);
                        ApplyDiscard(model, s, c, image.ClusterSize, backingBytes);
                        break;
                    case Op.Flush:
                        await image.FlushAsync();
                        break;
                    case Op.Checkpoint:
                        await image.CheckpointAsync();
                        break;
                    case Op.Reopen:
                        await image.DisposeAsync();
                        image = await host.OpenAsync(path);
                        break;
                }
            }
            var back = new byte[c.Size];
            await image.ReadAsync(0, back);
            AssertEqual(model, back, "read back before close");
        }
        finally
        {
            await image.DisposeAsync();
        }
        var check = QemuTools.QemuImg("check", path);
        Assert.True(check.ExitCode == 0, $"qemu-img check: {check.StdOut}{check.StdErr}");
        var raw = dir.File("model.raw");
        await File.WriteAllBytesAsync(raw, model);
        var cmp = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", path, raw);
        Assert.True(cmp.ExitCode == 0, $"qemu-img compare: {cmp.StdOut}{cmp.StdErr}");
    }

    // Discard drops whole clusters only; what they read afterwards follows the spec: the
    // backing file where v2 or a shorter backing file shows through, zeros otherwise.
    private static void ApplyDiscard(byte[] model, Step s, Case c, int clusterSize, byte[] backing)
    {
        long cs = clusterSize;
        for (long start = (s.Offset + cs - 1) / cs * cs; start + cs <= s.Offset + s.Length; start += cs)
        {
            Array.Clear(model, (int)start, (int)cs);
            if (c.Version == 2 && start < backing.Length)
                backing.AsSpan((int)start, (int)Math.Min(cs, backing.Length - start)).CopyTo(model.AsSpan((int)start));
        }
    }

    private static byte[] Pattern(int length, byte seed)
    {
        var data = new byte[length];
        new Random(seed * 7919 + length).NextBytes(data);
        return data;
    }

    private static void AssertEqual(byte[] expected, byte[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            if (expected[i] != actual[i]) Assert.Fail($"{what}: first difference at offset {i}: expected {expected[i]:X2}, got {actual[i]:X2}");
    }
}
