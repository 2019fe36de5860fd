namespace Qcow2Actors.Engine;

/// <summary>How <see cref="Qcow2Image.OpenAsync"/> opens an image.</summary>
public sealed class Qcow2OpenOptions
{
    /// <summary>Open without write access. Only read-only opens exist until the write engine lands.</summary>
    public bool ReadOnly { get; init; } = true;

    /// <summary>Read this internal snapshot (matched by id first, then by name) instead of the active image.</summary>
    public string? Snapshot { get; init; }

    /// <summary>"qcow2", "raw", or null to probe by the qcow2 magic (anything else is raw, as qemu-img does).</summary>
    public string? Format { get; init; }

    /// <summary>Parsed L2 tables kept per image; each costs about one cluster of memory.</summary>
    public int L2CacheSize { get; init; } = Read.L2Cache.DefaultCapacity;

    /// <summary>Backing chains deeper than this are refused (a loop is refused at any depth).</summary>
    public int MaxBackingDepth { get; init; } = 64;
}
