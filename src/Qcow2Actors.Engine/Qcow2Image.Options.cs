namespace Qcow2Actors.Engine;

/// <summary>How <see cref="Qcow2Image.OpenAsync"/> opens an image.</summary>
public sealed class Qcow2OpenOptions
{
    /// <summary>Open without write access. Read-write opens run the image on the actor engine (see <see cref="ImageHost"/>).</summary>
    public bool ReadOnly { get; init; } = true;

    /// <summary>
    /// Read-only opens only: share the image with writers (qemu-img's <c>-U</c>, force-share). The
    /// image lock then claims nothing but "consistent read", so it works on an image another
    /// process (q2a serve, qemu-nbd) is writing, and reads may see it change underneath.
    /// </summary>
    public bool ForceShare { get; init; }

    /// <summary>
    /// Share the backing chain with writers: its files are opened as force-share readers (only
    /// "consistent read" claimed), whatever <see cref="ReadOnly"/> says of the image itself. What
    /// <c>qemu-img commit</c> needs: the image stays open for writing while another open of this
    /// process writes into one of its backing files (OFD locks of two opens conflict even within one
    /// process). Reads reaching the backing chain may then see it change underneath.
    /// </summary>
    public bool ShareBackingChain { get; init; }

    /// <summary>Read this internal snapshot (matched by id first, then by name) instead of the active image.</summary>
    public string? Snapshot { get; init; }

    /// <summary>"qcow2", "raw", or null to probe by the qcow2 magic (anything else is raw, as qemu-img does).</summary>
    public string? Format { get; init; }

    /// <summary>Most parsed L2 tables kept per image (each costs about one cluster of memory).</summary>
    public int L2CacheSize { get; init; } = Read.L2Cache.DefaultCapacity;

    /// <summary>
    /// Open an image whose journal-pending bit is set even though its journal is missing,
    /// rebuilding refcounts from the tables on disk (changes since the last checkpoint are lost).
    /// </summary>
    public bool RebuildWithoutJournal { get; init; }

    /// <summary>
    /// Memory budget of the L2 cache per image, which caps <see cref="L2CacheSize"/> for large
    /// clusters: 64 MiB holds 1024 tables of 64 KiB clusters but only 32 of 2 MiB clusters.
    /// </summary>
    public long L2CacheBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>
    /// Opens the files of the image (path, writable) instead of the host file system, e.g. to
    /// inject faults or simulate crashes. Each call must return a new handle: the engine
    /// disposes what it gets. Null: host files, with transient read errors retried.
    /// </summary>
    public Func<string, bool, Device.IBlockDevice>? DeviceFactory { get; init; }

    /// <summary>
    /// How the image file (and its external data file) use the host page cache, as QEMU's
    /// <c>cache=</c>: <see cref="Device.CacheMode.Writeback"/> (the default) through it,
    /// <see cref="Device.CacheMode.None"/> around it with O_DIRECT (Linux; the open fails with one line
    /// naming the file when its filesystem refuses O_DIRECT). Flushes make writes durable either way.
    /// The journal always goes through the page cache: it is written in batches and fdatasynced.
    /// Ignored when <see cref="DeviceFactory"/> opens the files.
    /// </summary>
    public Device.CacheMode Cache { get; init; } = Device.CacheMode.Writeback;

    /// <summary>Opens <paramref name="path"/> through <see cref="DeviceFactory"/> or the host file system (with <see cref="Cache"/>).</summary>
    internal Device.IBlockDevice OpenDevice(string path, bool writable)
    {
        if (DeviceFactory?.Invoke(path, writable) is { } device) return device;
        // An image opened through the engine (served, converted, compared): the process's read ring is made now, not by
        // the first read that misses the page cache, which would wait for its setup. Only a bare device open
        // (info, check) leaves it unmade.
        if (Cache == Device.CacheMode.Writeback) _ = Device.IoUringReadRing.Shared;
        return Device.ResilientBlockDevice.OpenFile(path, writable, Cache);
    }

    /// <summary>Where read-only opens find a journal-pending image's journal; null: beside the image.</summary>
    internal PendingJournalSource? JournalSource { get; private set; }

    /// <summary>The host's shared metadata budget every L2 cache of the image charges (null: none; set by <see cref="ImageHost"/>).</summary>
    internal Read.MetadataCacheBudget? MetadataBudget { get; private set; }

    /// <summary>A copy of these options with <see cref="MetadataBudget"/> set.</summary>
    internal Qcow2OpenOptions WithMetadataBudget(Read.MetadataCacheBudget? budget)
    {
        if (budget is null) return this;
        var copy = (Qcow2OpenOptions)MemberwiseClone();
        copy.MetadataBudget = budget;
        return copy;
    }

    /// <summary>A copy of these options (every setting, whatever is added later) with <see cref="JournalSource"/> set.</summary>
    internal Qcow2OpenOptions WithJournalSource(PendingJournalSource source)
    {
        var copy = (Qcow2OpenOptions)MemberwiseClone();
        copy.JournalSource = source;
        return copy;
    }

    /// <summary>
    /// Called once per fault of a read-write image, when it happens: the image turned read-only
    /// (failed fsync or journal write), was found corrupt, ran out of space, or was closed without
    /// a clean checkpoint. Runs on an engine thread: keep it short (log, count); what it throws
    /// is ignored. Null: faults show only as the errors of the requests they fail.
    /// </summary>
    public Action<Qcow2ImageFault>? OnFault { get; init; }

    /// <summary>
    /// Read-write opens: the byte quota this image's allocated clusters count against, shared with
    /// every image opened with the same object (one per tenant). The image charges its allocated
    /// clusters (refcount above 0, metadata included) at open, reserves every new cluster before it is
    /// mapped, releases clusters whose refcount reaches 0 and everything at close. A write or
    /// write-zeroes that would pass the limit fails whole with <see cref="Qcow2NoSpaceException"/>
    /// (nothing mapped; the image stays writable). Null: no quota.
    /// </summary>
    public SpaceQuota? Quota { get; init; }

    /// <summary>
    /// The value of the <c>image</c> tag on this image's metrics (<see cref="Metrics.EngineMetrics"/>);
    /// null: the image's full path. A host serving tenants may give a stable name such as
    /// <c>acme/disk1</c> instead of a path.
    /// </summary>
    public string? MetricsName { get; init; }

    /// <summary>
    /// Extra tags on this image's metrics (e.g. <c>tenant=acme</c>), added to the <c>image</c> tag;
    /// the keys <c>image</c> and <c>kind</c> belong to the engine and are ignored here.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, object?>> MetricTags { get; init; } = [];

    /// <summary>
    /// Read-write opens through <see cref="ImageHost.OpenAsync"/>: a <see cref="Device.LockMode.Writer"/>
    /// lock the caller already holds on the image's file, which the open takes over instead of taking
    /// one (the image releases it at close; a failed open releases it too). What a creator needs so
    /// that no other process can open the new image between its creation and this open. Null: the
    /// open takes the write lock itself.
    /// </summary>
    public Device.ImageLock? WriteLock { get; init; }

    /// <summary>Backing chains deeper than this are refused (a loop is refused at any depth).</summary>
    public int MaxBackingDepth { get; init; } = 64;
}
