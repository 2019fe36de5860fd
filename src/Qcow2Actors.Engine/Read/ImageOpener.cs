using Qcow2Actors.Engine.Compression;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Read;

/// <summary>What opening one layer found out, for <see cref="Qcow2Image.Info"/>.</summary>
internal sealed record OpenedLayer(IImageLayer Layer, ImageHeaderBlock? HeaderBlock, IReadOnlyList<SnapshotRef> Snapshots, SnapshotRef? Snapshot)
{
    /// <summary>The image lock of every file of the chain; whoever keeps the layer keeps these until it closes.</summary>
    public ImageLockSet? Locks { get; init; }
}

/// <summary>
/// Opens an image and its backing chain read-only, validating everything a read will trust
/// before it allocates anything sized by the file (FORMAT.md §2 opener rules plus in-file bounds).
/// </summary>
internal static class ImageOpener
{
    public static async Task<OpenedLayer> OpenAsync(string path, Qcow2OpenOptions options, CancellationToken cancellationToken)
    {
        var locks = new ImageLockSet();
        try
        {
            return await OpenAsync(path, options, locks, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            locks.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens the chain, taking QEMU's image locks on every file into <paramref name="locks"/> (files it
    /// already holds, such as a write open's image, are not locked again).
    /// </summary>
    public static async Task<OpenedLayer> OpenAsync(string path, Qcow2OpenOptions options, ImageLockSet locks, CancellationToken cancellationToken)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        // One set of metrics for the whole chain: a backing file's lookups count toward the image opened on top.
        var metrics = Metrics.ImageMetrics.For(path, options);
        var opened = await OpenLayerAsync(path, path, options.Format, options.Snapshot, options, locks, seen, 0, metrics, cancellationToken).ConfigureAwait(false);
        return opened with { Locks = locks };
    }

    /// <summary>
    /// Opens the image on <paramref name="device"/> (not a host file: an NBD export, memory) read-only:
    /// no host-file lock or stat for it, the format probed from its first bytes. Backing and data files it
    /// names by an absolute path open from the host as usual (locked); relative names are refused, since a
    /// device has no directory to resolve them in. The device belongs to the returned layer (and is not
    /// disposed here when the open fails: the caller that handed it over does that).
    /// </summary>
    public static async Task<OpenedLayer> OpenDeviceAsync(IBlockDevice device, Qcow2OpenOptions options, CancellationToken cancellationToken)
    {
        var locks = new ImageLockSet();
        try
        {
            string name = device.Name;
            string format = options.Format ?? await ProbeAsync(device, cancellationToken).ConfigureAwait(false);
            switch (format)
            {
                case "raw":
                    if (options.Snapshot is not null) throw new InvalidOperationException($"'{name}' is a raw image: it has no snapshots");
#pragma warning disable CA2000 // The layer moves into the returned OpenedLayer; its caller owns and disposes it.
                    return new OpenedLayer(RawLayer.Over(device, name), null, [], null) { Locks = locks };
#pragma warning restore CA2000
                case "qcow2":
                    // The device's name is not a host path: the metrics tag takes it as it is.
                    var metrics = new Metrics.ImageMetrics(options.MetricsName ?? name, options.MetricTags);
                    var opened = await OpenQcow2Async(device, path: null, name, options.Snapshot, options, locks,
                        new HashSet<string>(StringComparer.Ordinal), 0, metrics, cancellationToken).ConfigureAwait(false);
                    return opened with { Locks = locks };
                default:
                    throw new NotSupportedException($"Unknown image format '{format}' for '{name}' (q2a reads qcow2 and raw)");
            }
        }
        catch
        {
            locks.Dispose();
            throw;
        }
    }

    /// <summary>How an open of this options' chain claims a file: the top image, a data file, or a backing file.</summary>
    private static LockMode ModeFor(Qcow2OpenOptions options, int depth, bool dataFile)
    {
        bool writable = depth == 0 && !options.ReadOnly;
        if (!writable && (options.ForceShare || (depth > 0 && options.ShareBackingChain))) return LockMode.ForceShareReader;
        if (dataFile) return writable ? LockMode.DataFileWriter : LockMode.DataFileReader;
        return writable ? LockMode.Writer : LockMode.Reader;
    }

    private static void Lock(ImageLockSet locks, Qcow2OpenOptions options, string path, string displayName, LockMode mode)
    {
        // A device factory may stand in for files that do not exist on the host: nothing to lock then.
        if (options.DeviceFactory is not null && !File.Exists(path)) return;
        locks.Acquire(path, mode, displayName);
    }

    private static async Task<OpenedLayer> OpenLayerAsync(string path, string displayName, string? format, string? snapshot,
        Qcow2OpenOptions options, ImageLockSet locks, HashSet<string> seen, int depth, Metrics.ImageMetrics metrics, CancellationToken cancellationToken)
    {
        if (depth > options.MaxBackingDepth)
            throw new InvalidDataException($"backing chain of '{displayName}' is deeper than {options.MaxBackingDepth} images");
        string full = CanonicalPath(path);
        if (!seen.Add(full))
            throw new InvalidDataException($"backing chain loops: '{displayName}' is its own backing file");

        Lock(locks, options, path, displayName, ModeFor(options, depth, dataFile: false));
        format ??= Probe(path);
        switch (format)
        {
            case "raw":
                if (snapshot is not null) throw new InvalidOperationException($"'{displayName}' is a raw image: it has no snapshots");
#pragma warning disable CA2000 // The layer moves into the returned OpenedLayer; its caller owns and disposes it.
                return new OpenedLayer(RawLayer.Open(path, displayName, options.Cache), null, [], null);
#pragma warning restore CA2000
            case "qcow2":
                break;
            default:
                throw new NotSupportedException($"Unknown image format '{format}' for '{displayName}' (q2a reads qcow2 and raw)");
        }

        // Reads and opens are retried on transient I/O errors (never writes or flushes: DESIGN.md).
        bool writable = depth == 0 && !options.ReadOnly;
        var file = options.OpenDevice(path, writable);
        try
        {
            // A journal-pending image reads as recovery will leave it (applied in memory only).
            if (!writable) file = PendingJournal.Overlay(file, path, options.JournalSource, options.RebuildWithoutJournal);
            return await OpenQcow2Async(file, path, displayName, snapshot, options, locks, seen, depth, metrics, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    // path: the host path of file; null for a device that is not a host file.
    private static async Task<OpenedLayer> OpenQcow2Async(IBlockDevice file, string? path, string displayName, string? snapshot,
        Qcow2OpenOptions options, ImageLockSet locks, HashSet<string> seen, int depth, Metrics.ImageMetrics metrics, CancellationToken cancellationToken)
    {
        long fileLength = file.Length;
        var first = new byte[Math.Min(4096, fileLength)];
        await file.ReadAsync(first, 0, cancellationToken).ConfigureAwait(false);
        if (first.Length < 24) throw Invalid(displayName, new Qcow2FormatException(Qcow2Rule.HeaderTruncated, "header", 0, $"file is only {fileLength} bytes", (ulong)fileLength));
        long want = Qcow2Header.Cluster0Length(first);
        byte[] cluster0 = first;
        if (want > first.Length && fileLength > first.Length && ImageHeaderBlock.UsedLength(first) < 0)
        {
            cluster0 = new byte[Math.Min(want, fileLength)];
            await file.ReadAsync(cluster0, 0, cancellationToken).ConfigureAwait(false);
        }

        ImageHeaderBlock block;
        try
        {
            // Our journal-pending bit means the tables on disk are stale: the write engine (or the
            // read-only overlay above) must replay first.
            block = ImageHeaderBlock.Read(cluster0, IncompatibleFeatures.KnownToQemu, ValidationProfile.Open);
        }
        catch (Qcow2FormatException ex)
        {
            throw Invalid(displayName, ex);
        }
        var h = block.Header;
        if (h.CryptMethod != CryptMethod.None)
            throw new NotSupportedException($"'{displayName}' is encrypted ({h.CryptMethod}); encrypted images are not supported");

        long cs = h.ClusterSize;
        CheckInFile(displayName, "l1_table_offset", h.L1TableOffset, (long)h.L1Size * 8, fileLength);
        CheckInFile(displayName, "refcount_table_offset", h.RefcountTableOffset, (long)h.RefcountTableClusters * cs, fileLength);
        if (h.NbSnapshots > 0) CheckInFile(displayName, "snapshots_offset", h.SnapshotsOffset, 40, fileLength);

        var snapshots = h.NbSnapshots > 0
            ? await SnapshotDirectory.ReadAsync(file, h.SnapshotsOffset, h.NbSnapshots, h.Version, cancellationToken).ConfigureAwait(false)
            : new List<SnapshotRef>();

        var geometry = new ImageGeometry(h.ClusterBits, h.HasExtendedL2, h.HasExternalDataFile, h.Version);
        long size = h.Size;
        long l1Offset = h.L1TableOffset;
        int l1Size = h.L1Size;
        SnapshotRef? chosen = null;
        if (snapshot is not null)
        {
            chosen = snapshots.Find(s => s.Id == snapshot) ?? snapshots.Find(s => s.Name == snapshot)
                ?? throw new InvalidOperationException($"Failed to load snapshot: Can't find snapshot");
            if ((chosen.L1TableOffset & (cs - 1)) != 0)
                throw new Qcow2ImageCorruptException($"snapshot '{chosen.Name}' L1 table offset 0x{chosen.L1TableOffset:X} is not cluster aligned");
            CheckInFile(displayName, $"snapshot '{chosen.Name}' L1 table", chosen.L1TableOffset, (long)chosen.L1Size * 8, fileLength);
            l1Offset = chosen.L1TableOffset;
            l1Size = chosen.L1Size;
            size = chosen.DiskSize ?? h.Size;
        }

        var l1Bytes = new byte[(long)l1Size * 8];
        if (l1Size > 0 && await file.ReadAsync(l1Bytes, l1Offset, cancellationToken).ConfigureAwait(false) < l1Bytes.Length)
            throw new Qcow2ImageCorruptException($"L1 table at 0x{l1Offset:X} lies past the end of '{displayName}'");
        var l1 = new ulong[l1Size];
        for (int i = 0; i < l1.Length; i++) l1[i] = L1Entry.Read(l1Bytes, i).Raw;

        IBlockDevice? dataFile = null;
        string? dataFileName = null;
        IImageLayer? backing = null;
        try
        {
            if (h.HasExternalDataFile)
            {
                if (block.DataFile is null)
                    throw new InvalidDataException($"'{displayName}' needs an external data file but names none");
                dataFileName = CombinePath(displayName, block.DataFile);
                string dataPath = HostPath(path, displayName, block.DataFile);
                if (File.Exists(dataPath)) Lock(locks, options, dataPath, dataFileName, ModeFor(options, depth, dataFile: true));
                dataFile = options.OpenDevice(dataPath, writable: depth == 0 && !options.ReadOnly);
            }
            if (block.BackingFileName is { } backingName)
            {
                string backingPath = HostPath(path, displayName, backingName);
                if (!File.Exists(backingPath))
                    throw new FileNotFoundException(
                        $"Could not open '{displayName}': Could not open backing file: Could not open '{CombinePath(displayName, backingName)}': No such file or directory", backingPath);
                var opened = await OpenLayerAsync(backingPath, CombinePath(displayName, backingName), block.BackingFormat, null,
                    options, locks, seen, depth + 1, metrics, cancellationToken).ConfigureAwait(false);
                backing = opened.Layer;
            }
            var view = new ImageView(geometry, size, l1);
#pragma warning disable CA2000 // The layer moves into the returned OpenedLayer; its caller owns and disposes it.
            var cache = new L2Cache(L2CacheCapacity(options, cs));
            // Every layer's tables (backing files' too) count against the host's one budget.
            if (options.MetadataBudget is { } budget) cache.Attach(budget.Register(displayName), cs);
            var layer = new Qcow2Layer(displayName, file, new ImageViewCell(view), cache,
                CompressionCodecs.For((int)h.CompressionType), backing, dataFile, dataFileName, metrics,
                new HostHoleStatus(file, dataFile ?? file, h));
            return new OpenedLayer(layer, block, snapshots, chosen);
#pragma warning restore CA2000
        }
        catch
        {
            dataFile?.Dispose();
            if (backing is not null) await backing.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    // A name an image refers to, on the host: relative to the image's directory, or (for an image on a
    // device, which has no directory) only when absolute.
    private static string HostPath(string? imagePath, string displayName, string name)
    {
        if (imagePath is not null) return CombinePath(imagePath, name);
        if (name.StartsWith('/')) return name;
        throw new InvalidDataException($"Cannot generate a base directory for '{displayName}' to find '{name}' in");
    }

    private static int L2CacheCapacity(Qcow2OpenOptions options, long clusterSize) =>
        (int)Math.Clamp(Math.Min(options.L2CacheSize, options.L2CacheBytes / clusterSize), 4, int.MaxValue);

    /// <summary>qcow2 when the file starts with the qcow2 magic, raw otherwise (as qemu-img probes).</summary>
    public static string Probe(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        Span<byte> magic = stackalloc byte[4];
        int n = RandomAccess.Read(handle, magic, 0);
        return Qcow2Header.HasMagic(magic[..n]) ? "qcow2" : "raw";
    }

    /// <summary>Probe over a device: qcow2 when it starts with the qcow2 magic, raw otherwise.</summary>
    private static async Task<string> ProbeAsync(IBlockDevice device, CancellationToken cancellationToken)
    {
        var magic = new byte[(int)Math.Min(4, device.Length)];
        int n = magic.Length == 0 ? 0 : await device.ReadAsync(magic, 0, cancellationToken).ConfigureAwait(false);
        return Qcow2Header.HasMagic(magic.AsSpan(0, n)) ? "qcow2" : "raw";
    }

    /// <summary>
    /// QEMU's path_combine: an absolute <paramref name="name"/> stays as it is; a relative one is
    /// taken relative to the directory of <paramref name="basePath"/>.
    /// </summary>
    public static string CombinePath(string basePath, string name)
    {
        if (name.StartsWith('/')) return name;
        int slash = basePath.LastIndexOf('/');
        return slash < 0 ? name : basePath[..(slash + 1)] + name;
    }

    private static string CanonicalPath(string path)
    {
        var full = Path.GetFullPath(path);
        try
        {
            var target = File.ResolveLinkTarget(full, returnFinalTarget: true);
            return target?.FullName ?? full;
        }
        catch (IOException)
        {
            return full;
        }
    }

    private static void CheckInFile(string name, string field, long offset, long length, long fileLength)
    {
        if (offset < 0 || length < 0 || offset > fileLength || length > fileLength - offset)
            throw new Qcow2ImageCorruptException(
                $"'{name}': {field} 0x{offset:X} (+{length} bytes) lies outside the file ({fileLength} bytes)");
    }

    private static InvalidDataException Invalid(string name, Qcow2FormatException ex) =>
        new($"'{name}' is not a valid qcow2 image: {ex.Message}", ex);
}
