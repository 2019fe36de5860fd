namespace Qcow2Actors.Engine.Check;

/// <summary>
/// References counted per host cluster while walking the metadata: the in-memory refcount
/// table a repair would write back. Sized from the file length (plus the one partial cluster
/// past the end that QEMU tolerates), never from a size read out of the image, so a hostile
/// image cannot make the checker allocate more than the file justifies.
/// </summary>
public sealed class ClusterReferenceCounts
{
    private uint[] _counts;

    internal ClusterReferenceCounts(long clusters, ulong maxRefcount)
    {
        _counts = new uint[Math.Max(clusters, 1)];
        Count = clusters;
        Max = (uint)Math.Min(maxRefcount, uint.MaxValue);
    }

    /// <summary>Number of clusters covered (the file's clusters, plus any partial one referenced just past its end).</summary>
    public long Count { get; private set; }

    /// <summary>The largest count representable at the image's refcount width (capped at <see cref="uint.MaxValue"/>).</summary>
    public uint Max { get; }

    /// <summary>References found for host cluster <paramref name="cluster"/>; 0 beyond <see cref="Count"/>.</summary>
    public uint this[long cluster] => cluster < Count ? _counts[cluster] : 0;

    /// <summary>Adds one reference; false when the count is already at the width's maximum (an overflow).</summary>
    internal bool Increment(long cluster)
    {
        if (cluster >= Count)
        {
            if (cluster >= _counts.Length) Array.Resize(ref _counts, (int)Math.Max(cluster + 1, _counts.Length + 16));
            Count = cluster + 1;
        }
        if (_counts[cluster] >= Max) return false;
        _counts[cluster]++;
        return true;
    }
}
