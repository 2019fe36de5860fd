using System.Runtime.CompilerServices;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine;

/// <summary>
/// An open disk image (qcow2 with its backing chain, or raw). Reads never block one another
/// and take no locks: each request maps through the image's current immutable view.
/// Write methods come with the write engine, which publishes its changes into the same
/// view and L2 cache the reads use.
/// </summary>
public sealed partial class Qcow2Image : IAsyncDisposable
{
    private readonly IImageLayer _top;
    private readonly Qcow2Layer? _qcow2;
    // QEMU's image locks on every file of the chain, held from open until every file is closed.
    private readonly Device.ImageLockSet? _locks;
    private int _disposed;

    private Qcow2Image(OpenedLayer opened)
    {
        _top = opened.Layer;
        _locks = opened.Locks;
        _qcow2 = opened.Layer as Qcow2Layer;
        _openedHeader = opened.HeaderBlock?.Header.Clone();
        _info = new Qcow2ImageInfo(
            opened.Layer.FileName,
            opened.Layer.Format,
            opened.Layer.Size,
            _openedHeader?.ClusterSize,
            opened.HeaderBlock?.BackingFileName,
            opened.HeaderBlock?.BackingFormat,
            opened.HeaderBlock?.DataFile,
            [.. opened.Snapshots.Select(s => new Qcow2SnapshotInfo(s.Id, s.Name, s.DiskSize))],
            opened.Snapshot?.Name);
    }

    /// <summary>
    /// Opens <paramref name="path"/> and its whole backing chain read-only. The header, table
    /// bounds and backing chain are validated here; a damaged table entry fails only the reads that reach it.
    /// An image a crash left journal-pending reads as recovery will leave it: its journal (beside
    /// the image) is replayed into memory only, and neither file is written.
    /// </summary>
    /// <exception cref="InvalidDataException">Not a valid qcow2 image, or a backing chain that loops or is too deep.</exception>
    /// <exception cref="NotSupportedException">Encryption, an unknown incompatible feature (named), or an unknown format.</exception>
    /// <exception cref="Qcow2ImageCorruptException">A table lies outside the file.</exception>
    /// <exception cref="Device.ImageLockException">Another process holds the image (or a file of its chain) in a way this open cannot share.</exception>
    /// <exception cref="IOException">Journal-pending and the journal is missing (the message names <c>q2a recover --rebuild</c>).</exception>
    public static async Task<Qcow2Image> OpenAsync(string path, Qcow2OpenOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new Qcow2OpenOptions();
        if (!options.ReadOnly && options.ForceShare)
            throw new ArgumentException($"Could not open '{path}': force-share=on can only be used with read-only images");
        if (!options.ReadOnly)
            return await ImageHost.Shared.OpenAsync(path, options, cancellationToken).ConfigureAwait(false);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Could not open '{path}': No such file or directory", path);
        var opened = await ImageOpener.OpenAsync(path, options, cancellationToken).ConfigureAwait(false);
        var image = new Qcow2Image(opened);
        await image.LoadStoredBitmapsAsync(opened, cancellationToken).ConfigureAwait(false);
        return image;
    }

    /// <summary>
    /// Opens the image stored on <paramref name="device"/> read-only: a device that is not a host file,
    /// such as an NBD export (<c>Qcow2Actors.Nbd.Client.NbdBlockDevice</c>). The format is
    /// <see cref="Qcow2OpenOptions.Format"/> or probed from the device's first bytes (qcow2 magic, else
    /// raw); the image's name (<see cref="Qcow2ImageInfo.FileName"/>) is the device's
    /// <see cref="Device.IBlockDevice.Name"/>. No host-file lock or stat is attempted for the device. A
    /// raw image takes its block status from the device when it is an <see cref="Device.IAllocationStatusDevice"/>
    /// (otherwise every byte is data). Backing and data files named by an absolute path open from the host
    /// (locked as usual); relative names are refused, as a device has no directory to resolve them in.
    /// The image owns the device from this call on: it is disposed with the image, or here when the open fails.
    /// </summary>
    /// <exception cref="NotSupportedException"><see cref="Qcow2OpenOptions.ReadOnly"/> is false, or the format is unknown.</exception>
    /// <exception cref="InvalidDataException">Not a valid qcow2 image, or a relative backing or data file name.</exception>
    public static async Task<Qcow2Image> OpenOnDeviceAsync(Device.IBlockDevice device, Qcow2OpenOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(device);
        options ??= new Qcow2OpenOptions();
        try
        {
            if (!options.ReadOnly)
                throw new NotSupportedException($"Could not open '{device.Name}': images on a device open read-only");
            var opened = await ImageOpener.OpenDeviceAsync(device, options, cancellationToken).ConfigureAwait(false);
            return new Qcow2Image(opened);
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    /// <summary>Guest size in bytes (a snapshot's own size when reading a snapshot).</summary>
    public long VirtualSize => _top.Size;

    /// <summary>
    /// The decoded qcow2 header as of now (null for a raw image): an immutable copy taken after the
    /// engine's last header change (the engine is the header's one writer).
    /// </summary>
    public ReadOnlyQcow2Header? Header => (_ctx?.Headers.Snapshot ?? _openedHeader) is { } header ? new ReadOnlyQcow2Header(header) : null;

    // The header as opened (read-only images, whose header never changes).
    private readonly Qcow2Header? _openedHeader;

    /// <summary>What the image is and what it refers to (its size and snapshots as of the last resize or snapshot edit).</summary>
    public Qcow2ImageInfo Info => _info;

    private volatile Qcow2ImageInfo _info;

    /// <summary>
    /// Fills <paramref name="buffer"/> with guest bytes from <paramref name="offset"/>: stored data,
    /// zeros, the backing chain's content (zeros past a shorter backing file) or decompressed clusters.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the virtual disk.</exception>
    /// <exception cref="Qcow2ImageCorruptException">A table entry on the way is damaged.</exception>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        // A writable image's reads pass the request gate (an online snapshot edit waits for them).
        if (_ctx is not null) return ReadAdmittedAsync(offset, buffer, cancellationToken);
        CheckRange(offset, buffer.Length);
        return buffer.Length == 0 ? ValueTask.CompletedTask : _top.ReadAsync(offset, buffer, cancellationToken);
    }

    /// <summary>
    /// Fills <paramref name="buffer"/> with guest bytes from <paramref name="offset"/> and returns true when
    /// that needs no wait: every table on the way cached, the data in the host's page cache (or zeros).
    /// Returns false, having waited for nothing, otherwise (also for a range outside the disk, a closed image,
    /// or damage): the caller then uses <see cref="ReadAsync"/>, which waits and reports. A server uses it to
    /// answer cached reads on the thread that received them and hand only disk reads to threads that may block.
    /// </summary>
    public bool TryReadNow(long offset, Span<byte> buffer)
    {
        if (_disposed != 0 || _top is not Read.Qcow2Layer layer || buffer.IsEmpty) return false;
        // A writable image's reads pass the request gate, as ReadAsync's do; a wait there is a false here.
        if (_ctx is not null && !_gate.TryEnter()) return false;
        try
        {
            return InDisk(offset, buffer.Length) && layer.TryReadNow(offset, buffer);
        }
        finally
        {
            if (_ctx is not null) _gate.Exit();
        }
    }

    /// <summary>
    /// Starts reading <paramref name="count"/> guest bytes at <paramref name="offset"/> into
    /// <paramref name="buffer"/> from <paramref name="index"/> without any thread waiting for the disk, and
    /// returns true: <paramref name="completion"/> is then called once, on the engine's I/O completion thread,
    /// and the buffer must be left alone until then. That is possible when the range is stored data in one
    /// run, its table is cached and the host has asynchronous file reads (io_uring). Otherwise returns false
    /// at once, having started nothing (also for a range outside the disk or a closed image): use
    /// <see cref="ReadAsync"/>. A server uses it for reads that missed the page cache
    /// (<see cref="TryReadNow"/>), so no pool thread sits in pread.
    /// </summary>
    public bool TryStartRead(long offset, byte[] buffer, int index, int count, IReadCompletion completion)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        ArgumentNullException.ThrowIfNull(completion);
        if (_disposed != 0 || _top is not Read.Qcow2Layer layer || count <= 0 || index < 0 || count > buffer.Length - index) return false;
        if (!InDisk(offset, count)) return false;
        // A writable image's reads pass the request gate; this one holds its admission until the read ends.
        var gated = _ctx is not null;
        if (gated && !_gate.TryEnter()) return false;
        var started = Read.StartedGuestRead.Rent(gated ? _gate : null, buffer, index, count, completion);
        bool ok;
        try
        {
            ok = layer.TryStartRead(offset, buffer, index, count, started);
        }
        catch
        {
            started.Abandon();
            throw;
        }
        if (!ok) started.Abandon();
        return ok;
    }

    /// <summary>
    /// Pins guest bytes [<paramref name="offset"/>, + <paramref name="count"/>) where they lie in the host file,
    /// for a server to send them straight from the file (<see cref="HostFileRange"/>), and returns the pin. That is
    /// possible when the range is stored data in one run of this image's file, its table is cached, and the bytes
    /// are in the host's page cache (the call waits for a readahead already under way, no more). Returns null
    /// otherwise (also outside the disk, on a closed image, or where the system cannot tell what is cached): use
    /// <see cref="ReadAsync"/>.
    /// </summary>
    public HostFileRange? TryPinFileRange(long offset, int count)
    {
        if (_disposed != 0 || _top is not Read.Qcow2Layer layer || count <= 0) return null;
        var ctx = _ctx;
        // A writable image's reads pass the request gate; this one holds its admission until the pin goes.
        if (ctx is not null && !_gate.TryEnter()) return null;
        Write.ClusterLeases.Lease? lease = null;
        HostFileRange? pinned = null;
        try
        {
            // Inside the gate: an online snapshot apply may change the disk's size.
            if (!InDisk(offset, count)) return null;
            if (!layer.TryMapFileRun(offset, count, out var host, out var source)) return null;
            if (ctx is not null && !ctx.Geometry.ExternalDataFile)
            {
                // Leased first, then checked against what is published now, as an in-place write does: a discard
                // published before is seen here, one published after frees the clusters only once the lease is back.
                lease = ctx.Leases.Acquire(host, count, ctx.Geometry.ClusterBits);
                if (!layer.TryMapFileRun(offset, count, out var again, out _) || again != host) return null;
            }
            if (source!.TryPinCached(host, count) is not { } handle) return null;
            pinned = new HostFileRange(handle, host, count, lease, ctx is null ? null : _gate);
            // Its lookup was answered by the cached table, as a read's is (counted once, for the pin that went out).
            layer.Metrics.L2Hit();
            return pinned;
        }
        finally
        {
            if (pinned is null)
            {
                lease?.Dispose();
                if (ctx is not null) _gate.Exit();
            }
        }
    }

    /// <summary>
    /// Block status of [<paramref name="offset"/>, <paramref name="offset"/> + <paramref name="length"/>) as
    /// qemu-img map reports it: maximal runs, merged when depth, flags and file agree and host
    /// offsets continue each other.
    /// </summary>
    public async IAsyncEnumerable<ImageExtent> GetMapAsync(long offset, long length, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        CheckRange(offset, length);
        long end = offset + length;
        ImageExtent? current = null;
        for (long pos = offset; pos < end;)
        {
            ImageExtent? next = null;
            using (await EnterAsync(cancellationToken).ConfigureAwait(false))
            {
                // An online snapshot apply may have shrunk the disk since the range was checked.
                if (pos < VirtualSize) next = await BlockStatusAsync(pos, Math.Min(end, VirtualSize) - pos, cancellationToken).ConfigureAwait(false);
            }
            if (next is null) break;
            pos += next.Length;
            if (current is not null && Mergeable(current, next))
            {
                current = current with { Length = current.Length + next.Length };
                continue;
            }
            if (current is not null) yield return current;
            current = next;
        }
        if (current is not null) yield return current;
    }

    private async ValueTask<ImageExtent> BlockStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        var layer = _top;
        int depth = 0;
        LayerStatus status;
        while (true)
        {
            status = await layer.GetStatusAsync(offset, length, cancellationToken).ConfigureAwait(false);
            length = status.Length;
            if (status.Data || status.Zero || layer.Backing is null) break;
            layer = layer.Backing;
            length = Math.Min(length, layer.Size - offset);
            depth++;
        }
        return new ImageExtent(offset, length, depth, status.Allocated, status.Zero, status.Data,
            status.HasHostOffset ? status.HostOffset : null, status.File);
    }

    // qemu-img map's entry_mergeable.
    private static bool Mergeable(ImageExtent a, ImageExtent b) =>
        a.Zero == b.Zero && a.Data == b.Data && a.Depth == b.Depth && a.Present == b.Present
        && string.Equals(a.FileName, b.FileName, StringComparison.Ordinal)
        && a.Offset.HasValue == b.Offset.HasValue
        && (!a.Offset.HasValue || a.Offset.Value + a.Length == b.Offset);

    /// <summary>True when [offset, offset + length) lies on the disk (for the Try* calls, which decline instead of throwing).</summary>
    private bool InDisk(long offset, long length)
    {
        long size = VirtualSize;
        return offset >= 0 && length >= 0 && offset <= size && length <= size - offset;
    }

    private void CheckRange(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset > VirtualSize || length > VirtualSize - offset)
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"range {offset}+{length} is outside the {VirtualSize}-byte disk of '{Info.FileName}'");
    }

    /// <summary>The read side, for the write engine and the NBD server within this assembly's friends.</summary>
    internal Qcow2Layer? ReadSide => _qcow2;

    /// <summary>
    /// Its host stopped with the image still open (what a crash leaves): no more writes, and the
    /// image locks go as they would with the process. The journal stays for the next open to replay.
    /// </summary>
    internal void Abandon()
    {
        if (_ctx is { } ctx)
        {
            const string reason = "its image host stopped before it was closed; its journal is kept for the next write open or 'q2a recover' to replay";
            bool wasReadOnly = ctx.ReadOnlyReason is not null;
            // Read-only from now on, and reported once as what it is: an unclean close.
            ctx.Fail(Qcow2ImageFaultKind.UncleanClose, reason);
            if (wasReadOnly) ctx.Report(Qcow2ImageFaultKind.UncleanClose, reason);
        }
        _abandoned.TrySetResult();
        _locks?.Dispose();
        _ctx?.Allocator?.CloseSpace();
    }

    /// <summary>Closes the image and its backing chain.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try
        {
            await CloseWriterAsync().ConfigureAwait(false);
        }
        finally
        {
            try
            {
                await _top.DisposeAsync().ConfigureAwait(false);
            }
            finally
            {
                _locks?.Dispose();
                _host?.Forget(this);
                // Its quota charge goes back and the gauge stops reporting it as the close returns
                // (the image actor's stop does both too, later).
                _ctx?.Allocator?.CloseSpace();
                _ctx?.Metrics.Untrack();
            }
        }
    }
}
