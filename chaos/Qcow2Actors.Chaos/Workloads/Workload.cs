using System.Buffers.Binary;
using System.Globalization;

namespace Qcow2Actors.Chaos.Workloads;

/// <summary>The kinds of guest operation a workload issues.</summary>
public enum WorkloadOpKind
{
    /// <summary>Write generated data.</summary>
    Write,

    /// <summary>Write zeros (optionally unmapping).</summary>
    WriteZeroes,

    /// <summary>Discard (content afterwards: zeros or unchanged).</summary>
    Discard,

    /// <summary>Flush: the durability point a crash must respect.</summary>
    Flush,
}

/// <summary>How write data is generated.</summary>
public enum PatternKind
{
    /// <summary>
    /// Every 8-byte word derives from the workload seed, the op index and its absolute offset, so
    /// data written to the wrong place, a stale cluster or a torn write never matches by accident.
    /// </summary>
    Unique,

    /// <summary>One byte value per write (<see cref="WorkloadOp.Pattern"/>), as <c>qemu-io write -P</c> writes.</summary>
    SingleByte,
}

/// <summary>One operation of a workload; <see cref="Index"/> is its position, which the line protocol reports.</summary>
/// <param name="Index">Position in the workload, from 0.</param>
/// <param name="Kind">What it does.</param>
/// <param name="Offset">Guest offset (0 for a flush).</param>
/// <param name="Length">Byte count (0 for a flush).</param>
/// <param name="Fua">Write or write-zeroes with force-unit-access: durable on completion.</param>
/// <param name="Unmap">Write-zeroes that may deallocate.</param>
/// <param name="Pattern">The byte of a <see cref="PatternKind.SingleByte"/> write (never 0, so it differs from zeros).</param>
public readonly record struct WorkloadOp(int Index, WorkloadOpKind Kind, long Offset, long Length, bool Fua = false, bool Unmap = false, byte Pattern = 0)
{
    /// <summary>The same operation as a qemu-io command (<c>write -P 0x5a 4096 512</c>), for q2a io and for reproducing by hand.</summary>
    public string ToQemuIo() => Kind switch
    {
        WorkloadOpKind.Write => $"write{(Fua ? " -f" : "")} -P 0x{Pattern:x2} {Offset} {Length}",
        WorkloadOpKind.WriteZeroes => $"write -z{(Unmap ? " -u" : "")}{(Fua ? " -f" : "")} {Offset} {Length}",
        WorkloadOpKind.Discard => $"discard {Offset} {Length}",
        _ => "flush",
    };

    /// <inheritdoc />
    public override string ToString() => Kind == WorkloadOpKind.Flush
        ? $"#{Index} flush"
        : $"#{Index} {Kind}{(Fua ? "+fua" : "")}{(Unmap ? "+unmap" : "")} {Offset}+{Length}";
}

/// <summary>Shape of a generated workload. The defaults make a 16 MiB disk with plenty of overlap.</summary>
public sealed record WorkloadOptions
{
    /// <summary>Guest size; every operation stays inside it.</summary>
    public long DiskSize { get; init; } = 16 * 1024 * 1024;

    /// <summary>Number of operations.</summary>
    public int Operations { get; init; } = 200;

    /// <summary>The image's cluster size, so the generator can aim at whole clusters, sub-cluster pieces and boundary-crossing spans.</summary>
    public int ClusterSize { get; init; } = 64 * 1024;

    /// <summary>Offsets and lengths are multiples of this (512: what a guest block device issues).</summary>
    public int Alignment { get; init; } = 512;

    /// <summary>Largest single operation.</summary>
    public int MaxLength { get; init; } = 256 * 1024;

    /// <summary>Relative frequency of writes.</summary>
    public int WriteWeight { get; init; } = 60;

    /// <summary>Relative frequency of write-zeroes.</summary>
    public int WriteZeroesWeight { get; init; } = 10;

    /// <summary>Relative frequency of discards.</summary>
    public int DiscardWeight { get; init; } = 10;

    /// <summary>Relative frequency of flushes.</summary>
    public int FlushWeight { get; init; } = 15;

    /// <summary>Chance that a write or write-zeroes carries FUA.</summary>
    public double FuaProbability { get; init; } = 0.05;

    /// <summary>Chance that an operation lands in the first eighth of the disk, so operations overlap and rewrite allocated clusters.</summary>
    public double HotProbability { get; init; } = 0.5;

    /// <summary>How write data is generated.</summary>
    public PatternKind Pattern { get; init; } = PatternKind.Unique;
}

/// <summary>
/// A reproducible sequence of guest operations: the same seed and options give the same ops and
/// the same data in any process, so a child process and the verifier never exchange data, only
/// op indices.
/// </summary>
public sealed class Workload
{
    private Workload(int seed, WorkloadOptions options, IReadOnlyList<WorkloadOp> operations)
    {
        Seed = seed;
        Options = options;
        Operations = operations;
    }

    /// <summary>The seed it was generated from.</summary>
    public int Seed { get; }

    /// <summary>The options it was generated with.</summary>
    public WorkloadOptions Options { get; }

    /// <summary>The operations, in issue order.</summary>
    public IReadOnlyList<WorkloadOp> Operations { get; }

    /// <summary>Generates a workload from <paramref name="seed"/>.</summary>
    public static Workload Generate(int seed, WorkloadOptions? options = null)
    {
        options ??= new WorkloadOptions();
        Validate(options);
        var random = new Random(seed);
        var ops = new WorkloadOp[options.Operations];
        var total = options.WriteWeight + options.WriteZeroesWeight + options.DiscardWeight + options.FlushWeight;
        for (var i = 0; i < ops.Length; i++)
        {
            var roll = random.Next(total);
            var kind = roll < options.WriteWeight ? WorkloadOpKind.Write
                : roll < options.WriteWeight + options.WriteZeroesWeight ? WorkloadOpKind.WriteZeroes
                : roll < options.WriteWeight + options.WriteZeroesWeight + options.DiscardWeight ? WorkloadOpKind.Discard
                : WorkloadOpKind.Flush;
            if (kind == WorkloadOpKind.Flush)
            {
                ops[i] = new WorkloadOp(i, kind, 0, 0);
                continue;
            }
            var (offset, length) = Extent(random, options);
            var fua = kind != WorkloadOpKind.Discard && random.NextDouble() < options.FuaProbability;
            var unmap = kind == WorkloadOpKind.WriteZeroes && random.Next(2) == 0;
            var pattern = kind == WorkloadOpKind.Write ? (byte)random.Next(1, 256) : (byte)0;
            ops[i] = new WorkloadOp(i, kind, offset, length, fua, unmap, pattern);
        }
        return new Workload(seed, options, ops);
    }

    /// <summary>The data write <paramref name="op"/> writes (empty for other kinds).</summary>
    public byte[] DataFor(WorkloadOp op)
    {
        if (op.Kind != WorkloadOpKind.Write) return [];
        var data = new byte[op.Length];
        FillData(op, data);
        return data;
    }

    /// <summary>Fills <paramref name="buffer"/> (op.Length bytes) with the data of write <paramref name="op"/>.</summary>
    public void FillData(WorkloadOp op, Span<byte> buffer)
    {
        if (Options.Pattern == PatternKind.SingleByte)
        {
            buffer.Fill(op.Pattern);
            return;
        }
        // Words are keyed on absolute 8-byte-aligned offsets, so an unaligned write still gets
        // position-unique bytes and a torn or shifted copy is caught.
        Span<byte> bytes = stackalloc byte[8];
        for (var i = 0; i < buffer.Length;)
        {
            var absolute = op.Offset + i;
            var word = absolute & ~7L;
            BinaryPrimitives.WriteUInt64LittleEndian(bytes, Mix((ulong)Seed, (ulong)op.Index, (ulong)word));
            var from = (int)(absolute - word);
            var n = Math.Min(8 - from, buffer.Length - i);
            bytes.Slice(from, n).CopyTo(buffer[i..]);
            i += n;
        }
    }

    /// <summary>The workload as a qemu-io script, one command per line.</summary>
    public string ToQemuIoScript() => string.Join('\n', Operations.Select(o => o.ToQemuIo()));

    /// <inheritdoc />
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"workload seed {Seed}: {Operations.Count} ops on {Options.DiskSize} bytes");

    private static ulong Mix(ulong seed, ulong index, ulong word)
    {
        // SplitMix64 finaliser over the three keys: cheap, and no two keys collide in practice.
        var z = seed * 0x9E3779B97F4A7C15UL ^ index * 0xBF58476D1CE4E5B9UL ^ word * 0x94D049BB133111EBUL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private static (long Offset, long Length) Extent(Random random, WorkloadOptions o)
    {
        var align = o.Alignment;
        var region = random.NextDouble() < o.HotProbability ? Math.Max(o.DiskSize / 8, align) : o.DiskSize;
        long offset, length;
        switch (random.Next(3))
        {
            case 0:
            {
                // Whole clusters: the allocating path and whole-cluster overwrite.
                var clusters = random.Next(1, Math.Max(2, o.MaxLength / o.ClusterSize + 1));
                length = (long)clusters * o.ClusterSize;
                offset = random.NextInt64(Math.Max(1, region / o.ClusterSize)) * o.ClusterSize;
                break;
            }
            case 1:
            {
                // Inside one cluster: copy-on-write of the rest, subcluster bits.
                var units = o.ClusterSize / align;
                var first = random.Next(units);
                length = (long)random.Next(1, units - first + 1) * align;
                offset = random.NextInt64(Math.Max(1, region / o.ClusterSize)) * o.ClusterSize + (long)first * align;
                break;
            }
            default:
                // Anywhere, any length: crosses cluster and L2-table boundaries.
                length = (long)random.Next(1, o.MaxLength / align + 1) * align;
                offset = random.NextInt64(Math.Max(1, region / align)) * align;
                break;
        }
        length = Math.Min(length, o.MaxLength);
        if (offset + length > o.DiskSize) offset = Math.Max(0, (o.DiskSize - length) / align * align);
        length = Math.Min(length, o.DiskSize - offset);
        return (offset, length);
    }

    private static void Validate(WorkloadOptions o)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(o.Alignment, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(o.Operations);
        if (o.ClusterSize % o.Alignment != 0) throw new ArgumentException("ClusterSize must be a multiple of Alignment", nameof(o));
        if (o.MaxLength < o.Alignment) throw new ArgumentException("MaxLength must be at least Alignment", nameof(o));
        if (o.DiskSize < o.ClusterSize || o.DiskSize % o.Alignment != 0)
            throw new ArgumentException("DiskSize must be a multiple of Alignment and at least one cluster", nameof(o));
        if (o.WriteWeight < 0 || o.WriteZeroesWeight < 0 || o.DiscardWeight < 0 || o.FlushWeight < 0
            || o.WriteWeight + o.WriteZeroesWeight + o.DiscardWeight + o.FlushWeight == 0)
            throw new ArgumentException("weights must be non-negative and not all zero", nameof(o));
    }
}
