using Qcow2Actors.CrashLab.States;

namespace Qcow2Actors.CrashLab.Materialize;

/// <summary>
/// How a crash state differs from the base: its writes applied over the base in issue order, reduced to the
/// 512-byte sectors whose bytes changed. A trim that reaches the disk reads as zeros.
/// </summary>
public sealed class CrashStateDelta
{
    /// <summary>Granularity of the comparison with the base and of what is written out.</summary>
    public const int SectorSize = 512;
    private const int ChunkSize = 4096;

    private CrashStateDelta(IReadOnlyList<(long Offset, byte[] Data)> runs) => Runs = runs;

    /// <summary>Runs of adjacent changed sectors, in offset order.</summary>
    public IReadOnlyList<(long Offset, byte[] Data)> Runs { get; }

    /// <summary>Bytes that differ from the base (whole sectors).</summary>
    public long Bytes => Runs.Sum(r => (long)r.Data.Length);

    /// <summary>Computes the delta of <paramref name="state"/> over <paramref name="baseImage"/>.</summary>
    public static CrashStateDelta Build(CrashState state, CrashBase baseImage)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(baseImage);
        var chunks = new SortedDictionary<long, (byte[] Before, byte[] After)>();
        foreach (var (operation, offset, length) in state.Applied())
        {
            var end = Math.Min(offset + length, baseImage.Size);
            var zeroing = operation.Kind != CrashLogRecordKind.Write;
            for (var at = offset; at < end;)
            {
                var index = at / ChunkSize;
                if (!chunks.TryGetValue(index, out var chunk))
                {
                    // Zeroing a chunk nobody touched yet over a zero base changes nothing: skip it, so a TRIM or
                    // WRITE_ZEROES of the whole disk (mkfs does both) costs lookups, not a copy of the disk.
                    var chunkEnd = Math.Min((index + 1) * ChunkSize, end);
                    if (zeroing && baseImage.IsZero(index * ChunkSize, ChunkSize))
                    {
                        at = chunkEnd;
                        continue;
                    }

                    var before = new byte[ChunkSize];
                    baseImage.Read(index * ChunkSize, before);
                    chunk = (before, (byte[])before.Clone());
                    chunks.Add(index, chunk);
                }

                var inChunk = (int)(at - index * ChunkSize);
                var count = (int)Math.Min(ChunkSize - inChunk, end - at);
                var target = chunk.After.AsSpan(inChunk, count);
                if (!zeroing)
                    operation.Data.Span.Slice((int)(at - operation.Offset), count).CopyTo(target);
                else
                    target.Clear();
                at += count;
            }
        }

        var runs = new List<(long Offset, byte[] Data)>();
        var pending = new List<byte>();
        long pendingStart = -1;
        foreach (var (index, (before, after)) in chunks)
        {
            for (var s = 0; s < ChunkSize; s += SectorSize)
            {
                var sector = after.AsSpan(s, SectorSize);
                if (sector.SequenceEqual(before.AsSpan(s, SectorSize)))
                    continue;
                var offset = index * ChunkSize + s;
                if (pendingStart >= 0 && pendingStart + pending.Count != offset)
                {
                    runs.Add((pendingStart, pending.ToArray()));
                    pending.Clear();
                    pendingStart = -1;
                }

                if (pendingStart < 0)
                    pendingStart = offset;
                pending.AddRange(sector);
            }
        }

        if (pendingStart >= 0)
            runs.Add((pendingStart, pending.ToArray()));
        return new CrashStateDelta(runs);
    }
}
