using Qcow2Actors.Engine;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// An image of a tenant. <see cref="Image"/> is set while it is open; <see cref="Failure"/> once the engine
/// reported a fault that turns it read-only (EIO on flush, corruption) or it could not be opened. The
/// registry changes it under its gate; the fault callback sets <see cref="Failure"/> from the engine's threads.
/// </summary>
internal sealed class ImageEntry(string tenant, string name, string path)
{
    private volatile string? _failure;
    private volatile Qcow2Image? _image;

    public string Tenant { get; } = tenant;
    public string Name { get; } = name;
    public string Path { get; } = path;

    public Qcow2Image? Image { get => _image; set => _image = value; }

    public string? Failure { get => _failure; set => _failure = value; }

    /// <summary>The engine reported that the image was closed without a clean checkpoint.</summary>
    public bool ClosedUnclean { get; set; }

    /// <summary>The saved state had it open: a failed open keeps it so (the next start tries again).</summary>
    public bool WantOpen { get; set; }

    /// <summary>Cluster mode: served here because this node owns its sharded entity; never in this node's state file.</summary>
    public bool ClusterOwned { get; set; }

    /// <summary>Bytes charged to the tenant's quota for the image while it is closed.</summary>
    public long ClosedCharge { get; set; }

    /// <summary>Names of the exports serving it.</summary>
    public IReadOnlyList<string> Exports
    {
        // Changed under the registry's gate, read without it (lists): replaced whole, never changed in place.
        get => Volatile.Read(ref _exports);
        set => Volatile.Write(ref _exports, [.. value]);
    }

    private string[] _exports = [];

    public string Key => $"{Tenant}/{Name}";
}
