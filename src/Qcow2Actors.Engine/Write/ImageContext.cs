using Akka.Actor;
using Qcow2Actors.Engine.Compression;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// What the actors of one open image share: the devices, the read side they publish into,
/// and the image's fault state. The header block is owned by the ImageActor; the active
/// L1 entries are each owned by one L2TableActor and published here under a lock.
/// </summary>
internal sealed class ImageContext
{
    private readonly object _l1Lock = new();
    private volatile string? _readOnlyReason;

    private readonly Action<Qcow2ImageFault>? _onFault;

    public ImageContext(string path, IBlockDevice device, IBlockDevice? dataDevice, ImageHeaderBlock headerBlock,
        Qcow2Layer layer, ICompressionCodec codec, EngineSettings settings, Action<Qcow2ImageFault>? onFault = null)
    {
        _onFault = onFault;
        Path = path;
        Device = device;
        DataDevice = dataDevice;
        Headers = new HeaderWriter(device, headerBlock);
        Layer = layer;
        Codec = codec;
        Settings = settings;
        Geometry = layer.Views.Current.Geometry;
        Metadata = new MetadataMap(Geometry.ClusterBits);
        JournalRecords = new JournalInbox(this);
        Routes = new TableRoutes(settings.TimeProvider);
    }

    /// <summary>
    /// The snapshot table as of open or the last online snapshot edit (the only times it changes);
    /// entries are never changed once published here: readers clone them.
    /// </summary>
    public IReadOnlyList<SnapshotEntry> Snapshots
    {
        get => Volatile.Read(ref _snapshots);
        set => Volatile.Write(ref _snapshots, value);
    }

    private IReadOnlyList<SnapshotEntry> _snapshots = [];

    /// <summary>
    /// The image's lane of the engine's I/O threads (<see cref="BlockingIo.ForImage"/>), which every
    /// actor of the image runs its blocking file I/O on; null: the shared pool without a lane.
    /// </summary>
    public BlockingIo? Io { get; init; }

    /// <summary>The image's persistent dirty bitmaps (set once at open, before the first write).</summary>
    public Bitmaps.BitmapSet? Bitmaps { get; set; }

    /// <summary>Where the image's metadata lives (overlap checks).</summary>
    public MetadataMap Metadata { get; }

    /// <summary>
    /// Metadata would have been overwritten: turn the image read-only (so no table is written
    /// after this), set the corrupt bit (incompatible bit 1) durably in cluster 0 so no one writes
    /// to the image until it is repaired, and return the error the caller throws (EIO to an NBD
    /// client). The message is one line naming the image, the offset and the structure.
    /// </summary>
    public Qcow2ImageCorruptException MarkCorrupt(string problem)
    {
        Fail(Qcow2ImageFaultKind.Corrupt, $"corrupt: {problem}");
        try
        {
            // A v2 header has no feature bits: the writer stores it as v3 so the bit can be said at all.
            Headers.MarkCorrupt();
            Device.Flush();
        }
        catch (IOException)
        {
            // Marking is best effort; the image is read-only in this process either way.
        }
        return new Qcow2ImageCorruptException(
            $"'{Path}': {problem}; the image is marked corrupt and now read-only; repair it with 'q2a check -r all'");
    }

    /// <summary>Throws (after marking the image corrupt) if data at [offset, +length) would hit metadata.</summary>
    public void CheckDataWrite(long offset, long length)
    {
        if (Metadata.FindData(offset, length) is { } hit) throw MarkCorrupt(MetadataMap.DescribeData(offset, length, hit));
    }

    /// <summary>
    /// Throws if the image turned read-only (nothing is written in place after a fault), or (after
    /// marking the image corrupt) if a table written here would hit other metadata.
    /// </summary>
    public void CheckTableWrite(long offset, long length, MetadataKind kind)
    {
        ThrowIfReadOnly();
        if (Metadata.FindTable(offset, length, kind) is { } hit) throw MarkCorrupt(MetadataMap.DescribeTable(offset, length, kind, hit));
    }

    public string Path { get; }
    public IBlockDevice Device { get; }
    public IBlockDevice? DataDevice { get; }
    /// <summary>The header block, owned by <see cref="Headers"/>: read it here, change it only there.</summary>
    public ImageHeaderBlock HeaderBlock => Headers.Block;
    /// <summary>The live header (actors of this image only; others take <see cref="HeaderWriter.Snapshot"/>).</summary>
    public Qcow2Header Header => HeaderBlock.Header;
    public Qcow2Layer Layer { get; }
    public ImageGeometry Geometry { get; }
    public ICompressionCodec Codec { get; }
    public EngineSettings Settings { get; }
    public IImageLayer? Backing => Layer.Backing;
    public long ClusterSize => Geometry.ClusterSize;

    public IActorRef Refcounts { get; set; } = ActorRefs.Nobody;
    public IActorRef Journal { get; set; } = ActorRefs.Nobody;

    /// <summary>The records waiting for the next flush (<see cref="JournalInbox"/>); <see cref="Journal"/> takes them.</summary>
    public JournalInbox JournalRecords { get; }

    /// <summary>The live table actors callers may send table operations to directly (<see cref="TableRoutes"/>); the image actor opens and closes them.</summary>
    public TableRoutes Routes { get; }

    /// <summary>Where writes wait for their bitmap granules to be journaled (<see cref="BitmapJournalActor"/>).</summary>
    public IActorRef BitmapJournal { get; set; } = ActorRefs.Nobody;

    /// <summary>Journal space reserved ahead (file journal only; null for other plugins): checked before a request produces records.</summary>
    public Journal.JournalReservation? JournalSpace
    {
        get => _journalSpace;
        set
        {
            _journalSpace = value;
            value?.CountAppendsIn(Metrics); // the file reports the bytes it appends for this image
        }
    }

    private Journal.JournalReservation? _journalSpace;

    /// <summary>The one owner of the image's refcounts (set once the image is open); every refcount change goes through it.</summary>
    public RefcountAllocator? Allocator
    {
        get => _allocator;
        set
        {
            _allocator = value;
            if (value is not null) Metrics.Track(value.ObserveAllocatedClusters);
        }
    }

    private RefcountAllocator? _allocator;

    /// <summary>Where this image's measurements go (the read side's).</summary>
    public Metrics.ImageMetrics Metrics => Layer.Metrics;

    /// <summary>The image's mapping policy (stateless), for planning outside a table actor (quota estimates).</summary>
    public WritePlanner Planner => _planner ??= new WritePlanner(Geometry, Backing?.Size ?? -1);

    private WritePlanner? _planner;

    /// <summary>Host clusters the lock-free fast path is writing: freed clusters wait for them before punch and reuse.</summary>
    public ClusterLeases Leases { get; } = new();

    /// <summary>Set when the image may no longer be written (failed fsync, corruption found); says why.</summary>
    public string? ReadOnlyReason => _readOnlyReason;

    /// <summary>Turns the image read-only for good after a failed fsync or journal write; the first reason wins.</summary>
    public void Fail(string reason) => Fail(Qcow2ImageFaultKind.ReadOnly, reason);

    /// <summary>
    /// The one place an image turns read-only: the first reason wins and is reported once
    /// (<see cref="Qcow2OpenOptions.OnFault"/>); later failures only add their own request errors.
    /// </summary>
    public void Fail(Qcow2ImageFaultKind kind, string reason)
    {
        if (Interlocked.CompareExchange(ref _readOnlyReason, reason, null) is null) Report(kind, reason);
    }

    /// <summary>Tells the owner of the image about a fault (no space, unclean close) without changing its state.</summary>
    public void Report(Qcow2ImageFaultKind kind, string reason)
    {
        Metrics.Fault(kind);
        try
        {
            _onFault?.Invoke(new Qcow2ImageFault(Path, kind, reason.ReplaceLineEndings(" ")));
        }
        catch (Exception)
        {
            // A failing observer must not take an actor down with it.
        }
    }

    /// <summary>Throws if writes are no longer allowed.</summary>
    public void ThrowIfReadOnly()
    {
        if (_readOnlyReason is { } reason) throw new IOException($"'{Path}' is read-only: {reason}");
    }

    /// <summary>The one writer of cluster 0 while the image is open; it owns <see cref="HeaderBlock"/>.</summary>
    public HeaderWriter Headers { get; }

    /// <summary>True while the header on disk carries the dirty and journal-pending bits.</summary>
    public bool BitsOnDisk => Headers.BitsOnDisk;

    /// <summary>Sets the dirty and journal-pending bits on disk (<see cref="HeaderWriter.MarkDirty"/>).</summary>
    public bool MarkDirty() => Headers.MarkDirty();

    /// <summary>Clears both bits on disk (<see cref="HeaderWriter.MarkClean"/>); the caller flushes.</summary>
    public void MarkClean() => Headers.MarkClean();

    /// <summary>Changes header fields in memory only (they reach the disk with the next header write).</summary>
    public void ChangeHeader(Action<Qcow2Header> change) => Headers.Change(change);

    public ulong L1Entry(int index) => Layer.Views.Current.L1Entry(index);

    /// <summary>Publishes a new active L1 entry to the lock-free read side.</summary>
    public void PublishL1Entry(int index, ulong value)
    {
        lock (_l1Lock)
        {
            var view = Layer.Views.Current;
            if (view.L1Entry(index) != value) Layer.Views.Publish(view.WithL1Entry(index, value));
        }
    }

    /// <summary>Replaces the whole view (resize, snapshot apply): callers hold every table actor paused.</summary>
    public void PublishView(ImageView view)
    {
        lock (_l1Lock) Layer.Views.Publish(view);
    }
}
