using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The entries of one L2 table as the planner sees them: the words (null for a table that does
/// not exist yet: every entry unallocated) and whether the table is shared with a snapshot (then
/// any change first copies it, and the copy's entries lose their COPIED flag).
/// </summary>
internal readonly struct TableEntries(ulong[]? words, bool extended, bool shared)
{
    /// <summary>True when the table is reached from a snapshot's L1 too (not COPIED in the active L1).</summary>
    public bool Shared => shared;

    /// <summary>True when the table does not exist yet.</summary>
    public bool Missing => words is null;

    /// <summary>Entry <paramref name="i"/> (unallocated for a missing table).</summary>
    public L2Entry this[int i] => words is null ? default
        : extended ? new L2Entry(words[2 * i], words[2 * i + 1]) : new L2Entry(words[i]);
}

/// <summary>What one step of a guest write does to one cluster (or a run of clusters).</summary>
internal enum WriteStepKind
{
    /// <summary>The cluster is ours: the data goes to <see cref="WriteStep.Host"/> in place, no entry changes.</summary>
    InPlace,
    /// <summary>Extended L2, the cluster is ours but some touched subclusters are not allocated: write them (read-modify-write to subcluster bounds), then set the entry.</summary>
    Subclusters,
    /// <summary>A preallocated zero cluster we own: write the whole cluster (zeros around the data), then set the entry.</summary>
    ReuseZeroAllocated,
    /// <summary>External data file: the data goes to the guest offset of the data file; the entry is set when it changes.</summary>
    DataFile,
    /// <summary>A run of clusters that need new space: allocate <see cref="WriteStep.Count"/> contiguous clusters, fill (<see cref="WritePlanner.PlanFill"/>), map (<see cref="WritePlanner.MapAllocated"/>).</summary>
    Allocate,
}

/// <summary>
/// One step of a planned guest write over guest bytes [<see cref="From"/>, <see cref="To"/>).
/// <see cref="NewEntry"/> is the entry to set at <see cref="Index"/> (none for in-place writes, a
/// data-file write that keeps its mapping, and allocations, whose entries depend on the space found).
/// </summary>
internal sealed record WriteStep(WriteStepKind Kind, long From, long To, int Index, long ClusterStart)
{
    /// <summary>Host offset of the cluster written (not for <see cref="WriteStepKind.Allocate"/> or data-file writes).</summary>
    public long Host { get; init; }

    /// <summary>Entry to set once the data is written.</summary>
    public L2Entry? NewEntry { get; init; }

    /// <summary>Clusters a run of <see cref="WriteStepKind.Allocate"/> needs.</summary>
    public int Count { get; init; }

    /// <summary>Data file, partial write of a cluster not mapped before: the rest of the cluster is written with what it read before.</summary>
    public bool FillRest { get; init; }

    /// <summary>With <see cref="FillRest"/>: what the cluster read before was zeros (no read needed).</summary>
    public bool RestIsZero { get; init; }

    /// <summary>True when the step changes the table (which then must be writable: allocated, or copied when shared).</summary>
    public bool ChangesTable => Kind != WriteStepKind.InPlace && (Kind != WriteStepKind.DataFile || NewEntry is not null);
}

/// <summary>How newly allocated clusters of a run are filled around the guest data.</summary>
internal enum FillKind
{
    /// <summary>Only the data is written, at its place in the run (it covers the run, or the rest reads as zeros in fresh space).</summary>
    DataOnly,
    /// <summary>Extended L2 over unallocated entries: only the touched subclusters [From, To) are written, read around the data.</summary>
    Subclusters,
    /// <summary>The whole run is written from a buffer: the data, the partial head and tail clusters from what they read now (or zeros).</summary>
    Buffer,
}

/// <summary>How to fill a newly allocated run (<see cref="WritePlanner.PlanFill"/>).</summary>
internal readonly record struct FillPlan(FillKind Kind, long From, long To, bool HeadPartial, bool TailPartial, bool HeadZero, bool TailZero);

/// <summary>One entry to set, and the host clusters its old entry referenced that lose that reference.</summary>
internal readonly record struct EntryChange(int Index, L2Entry Entry, long[] Release);

/// <summary>One chunk of a write-zeroes request (at most a cluster): zeroed in metadata when <see cref="ByMetadata"/> allows it, else written as zeros.</summary>
internal readonly record struct ZeroChunk(long ClusterStart, long From, long To, bool ByMetadata);

/// <summary>What zeroing one cluster (or whole subclusters) in metadata comes to.</summary>
internal enum ZeroDecisionKind
{
    /// <summary>The format cannot say it in metadata: write zeros as data.</summary>
    WriteData,
    /// <summary>It reads as zeros already: nothing to do.</summary>
    Unchanged,
    /// <summary>Set the entry (and release what the old one referenced).</summary>
    Set,
}

/// <summary>The outcome of <see cref="WritePlanner.PlanZeroCluster"/>.</summary>
internal readonly record struct ZeroDecision(ZeroDecisionKind Kind, EntryChange Change);
