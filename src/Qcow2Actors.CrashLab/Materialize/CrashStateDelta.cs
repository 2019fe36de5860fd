using System.Buffers;
using Qcow2Actors.CrashLab.States;

namespace Qcow2Actors.CrashLab.Materialize;

/// <summary>
/// How a crash state differs from the base: its writes applied over the base in issue order, reduced to the
/// 512-byte sectors whose bytes changed. A trim that reaches the disk reads as zeros.
/// </summary>
/// <remarks>
/// What it holds is which operation last set each byte (<see cref="CrashStateCover"/>), not the bytes: those are
/// read from the log (mapped) and the base as <see cref="Runs"/> is enumerated, one run at a time. So a state late
/// in a recording that wrote many GiB costs memory for its operations, not for its data.
/// </remarks>
public sealed class CrashStateDelta
{
    /// <summary>Granularity of the comparison with the base and of what is written out.</summary>
    public const int SectorSize = 512;

    /// <summary>Longest run handed out: a longer stretch of changed sectors comes as several runs.</summary>
    private const int MaxRunLength = 1 << 20;

    private readonly CrashStateCover _cover;
    private readonly CrashBase _base;

    private CrashStateDelta(CrashStateCover cover, CrashBase baseImage)
    {
        _cover = cover;
        _base = baseImage;
    }

    /// <summary>
    /// Runs of adjacent changed sectors, in offset order, each at most 1 MiB. Read from the log and the base as they
    /// are enumerated (which needs the base open); each enumeration reads them again.
    /// </summary>
    public IEnumerable<(long Offset, byte[] Data)> Runs => EnumerateRuns();

    /// <summary>Bytes that differ from the base (whole sectors); enumerates <see cref="Runs"/>.</summary>
    public long Bytes => Runs.Sum(r => (long)r.Data.Length);

    /// <summary>Computes the delta of <paramref name="state"/> over <paramref name="baseImage"/>.</summary>
    public static CrashStateDelta Build(CrashState state, CrashBase baseImage)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(baseImage);
        var cover = new CrashStateCover();
        foreach (var (operation, offset, length) in state.Applied())
            cover.Apply(operation, offset, Math.Min(offset + length, baseImage.Size) - offset);
        return new CrashStateDelta(cover, baseImage);
    }

    private IEnumerable<(long Offset, byte[] Data)> EnumerateRuns()
    {
        var before = ArrayPool<byte>.Shared.Rent(MaxRunLength);
        var after = ArrayPool<byte>.Shared.Rent(MaxRunLength);
        try
        {
            foreach (var (start, end) in MayDiffer())
            {
                for (var block = start; block < end; block += MaxRunLength)
                {
                    var length = (int)Math.Min(MaxRunLength, end - block);
                    _base.Read(block, before.AsSpan(0, length));
                    before.AsSpan(0, length).CopyTo(after);
                    foreach (var segment in _cover.Overlapping(block, block + length))
                    {
                        var from = Math.Max(segment.Start, block);
                        segment.CopyTo(from, after.AsSpan((int)(from - block), (int)(Math.Min(segment.End, block + length) - from)));
                    }

                    var runStart = -1;
                    for (var at = 0; at <= length; at += SectorSize)
                    {
                        var changed = at < length && !after.AsSpan(at, SectorSize).SequenceEqual(before.AsSpan(at, SectorSize));
                        if (changed && runStart < 0)
                            runStart = at;
                        else if (!changed && runStart >= 0)
                        {
                            yield return (block + runStart, after.AsSpan(runStart, at - runStart).ToArray());
                            runStart = -1;
                        }
                    }
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(before);
            ArrayPool<byte>.Shared.Return(after);
        }
    }

    /// <summary>
    /// Sector-aligned, disjoint ranges in offset order outside which the state equals the base: every write's
    /// sectors, and the base's data under every zeroing (zeros over zeros change nothing, so a TRIM of the whole
    /// disk, as mkfs sends, costs a look at the base's extents rather than a pass over the disk).
    /// </summary>
    private IEnumerable<(long Start, long End)> MayDiffer()
    {
        long start = -1, end = -1;
        foreach (var segment in _cover.Segments)
        {
            var ranges = segment.Zeroes ? _base.DataWithin(segment.Start, segment.End) : [(segment.Start, segment.End)];
            foreach (var (from, to) in ranges)
            {
                var s = from / SectorSize * SectorSize;
                var e = (to + SectorSize - 1) / SectorSize * SectorSize;
                if (s <= end)
                {
                    end = Math.Max(end, e);
                    continue;
                }

                if (start >= 0)
                    yield return (start, end);
                (start, end) = (s, e);
            }
        }

        if (start >= 0)
            yield return (start, end);
    }
}
