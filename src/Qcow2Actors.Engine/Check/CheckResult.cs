namespace Qcow2Actors.Engine.Check;

/// <summary>A cluster whose stored refcount differs from the references the checker counted.</summary>
/// <param name="Cluster">Host cluster index.</param>
/// <param name="Stored">Refcount stored in the image.</param>
/// <param name="References">References counted from the metadata.</param>
public readonly record struct RefcountMismatch(long Cluster, ulong Stored, ulong References)
{
    /// <summary>Stored above the references: space is wasted but no data is at risk.</summary>
    public bool IsLeak => Stored > References;
}

/// <summary>
/// Outcome of <see cref="ImageChecker.Check(Device.IBlockDevice, string)"/>, counted by qemu-img's rules so the numbers
/// (and <see cref="ExitCode"/>) match <c>qemu-img check</c> on the same image. It keeps the
/// counted references and every mismatch, which is what a later repair needs.
/// </summary>
public sealed class CheckResult
{
    /// <summary>Image file name as given to the checker.</summary>
    public required string Filename { get; init; }

    /// <summary>Metadata errors: stored refcount below references, bad flags or offsets, overflows.</summary>
    public long Corruptions { get; internal set; }

    /// <summary>Clusters whose stored refcount exceeds their references.</summary>
    public long Leaks { get; internal set; }

    /// <summary>Failures of the check itself (I/O errors, unreadable refcount blocks).</summary>
    public long CheckErrors { get; internal set; }

    /// <summary>(Highest cluster with a stored refcount or a reference + 1) × cluster size; 0 if none.</summary>
    public long ImageEndOffset { get; internal set; }

    /// <summary>Guest clusters: ceil(virtual size / cluster size).</summary>
    public long TotalClusters { get; internal set; }

    /// <summary>Active guest clusters that are allocated (standard, preallocated zero or compressed).</summary>
    public long AllocatedClusters { get; internal set; }

    /// <summary>Allocated clusters not contiguous with their predecessor in the same L2 table, plus every compressed one.</summary>
    public long FragmentedClusters { get; internal set; }

    /// <summary>Active compressed guest clusters.</summary>
    public long CompressedClusters { get; internal set; }

    /// <summary>
    /// Set when the check had to stop (as qemu-img's "Check failed: &lt;reason&gt;"): the counts are
    /// then partial and qemu-img prints no summary.
    /// </summary>
    public string? AbortReason { get; internal set; }

    /// <summary>One line per finding, worded as qemu-img words it on stderr.</summary>
    public IReadOnlyList<string> Messages => _messages;

    /// <summary>Every cluster whose stored refcount differs from the counted references.</summary>
    public IReadOnlyList<RefcountMismatch> Mismatches => _mismatches;

    /// <summary>References counted per host cluster (null when the check stopped before counting).</summary>
    public ClusterReferenceCounts? References { get; internal set; }

    /// <summary>Refcount width of the image in bits.</summary>
    public int RefcountBits { get; internal set; }

    /// <summary>qemu-img's exit code: 1 check failed, 2 corruptions, 3 leaks only, 0 clean.</summary>
    public int ExitCode => AbortReason is not null || CheckErrors > 0 ? 1 : Corruptions > 0 ? 2 : Leaks > 0 ? 3 : 0;

    /// <summary>Corruptions fixed while counting (qemu fixes a refcount block outside the image there).</summary>
    internal long CorruptionsFixed { get; set; }

    /// <summary>
    /// The refcount structure itself is unusable (a block misaligned, outside the image, shared
    /// or with reserved bits; or a referenced cluster with stored refcount 0 that no in-place
    /// update can raise): only a rebuild from the counted references repairs it.
    /// </summary>
    internal bool NeedsRebuild { get; set; }

    /// <summary>Counts before the refcount comparison: what qemu's repair restores before re-comparing with fixes.</summary>
    internal long PreCompareCorruptions { get; set; }

    /// <inheritdoc cref="PreCompareCorruptions"/>
    internal long PreCompareLeaks { get; set; }

    /// <inheritdoc cref="PreCompareCorruptions"/>
    internal long PreCompareCheckErrors { get; set; }

    /// <summary>Index in <see cref="Messages"/> of the first line of the refcount comparison.</summary>
    internal int CompareMessageStart { get; set; }

    /// <summary>One past the last in-file cluster the old refcount table or any block pointer touches.</summary>
    internal long OldStructureEnd { get; set; }

    internal readonly List<string> _messages = [];
    internal readonly List<RefcountMismatch> _mismatches = [];
}

/// <summary>Which of qemu-img's check passes <see cref="ImageChecker"/> runs.</summary>
internal enum CheckPass
{
    /// <summary><c>qemu-img check</c>: count, compare, then check COPIED flags.</summary>
    Plain,

    /// <summary>First pass of <c>-r leaks</c>: count and compare only.</summary>
    RepairLeaks,

    /// <summary>First pass of <c>-r all</c>: as <see cref="RepairLeaks"/>, and a refcount block outside the image is taken as fixed by the rebuild.</summary>
    RepairAll,
}
