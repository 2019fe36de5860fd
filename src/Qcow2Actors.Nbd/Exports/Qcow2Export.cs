using System.Globalization;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Nbd.Exports;

/// <summary>
/// Serves an open <see cref="Qcow2Image"/> (qcow2 with its backing chain, or raw) over NBD with
/// qemu-nbd's semantics: reads through the backing chain, <c>base:allocation</c> from the
/// image's map, and errors as the errno a client understands.
/// </summary>
/// <remarks>
/// Block status follows qemu-nbd (since QEMU 6.0): <see cref="NbdExtentFlags.Hole"/> where the
/// range is not stored data anywhere in the chain, <see cref="NbdExtentFlags.Zero"/> where it
/// reads as zeroes. An unallocated cluster of an image without a backing file is therefore
/// hole and zero, a zero cluster (allocated or not) hole and zero, a data cluster neither.
/// </remarks>
public sealed partial class Qcow2Export : INbdExport, IAsyncDisposable
{
    /// <summary>Most extents one block status reply carries; the client asks again for the rest.</summary>
    public const int MaxExtentsPerReply = 1024;

    private readonly Qcow2Image _image;
    private readonly bool _ownsImage;
    private readonly bool _readOnly;
    private readonly int _zeroGranularity;
    private readonly IReadOnlyList<string> _dirtyBitmaps = [];
    private int _disposed;

    /// <summary>
    /// Serves <paramref name="image"/> as <paramref name="name"/>. With <paramref name="readOnly"/>
    /// (or when the image was opened read-only) the export is advertised read-only. The image is
    /// closed by <see cref="DisposeAsync"/> only when <paramref name="ownsImage"/>.
    /// <paramref name="discard"/> says what TRIM does.
    /// </summary>
    public Qcow2Export(Qcow2Image image, string name, bool readOnly = false, string? description = null, bool ownsImage = false,
        DiscardMode discard = DiscardMode.Unmap)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentException.ThrowIfNullOrEmpty(name);
        _image = image;
        _ownsImage = ownsImage;
        _readOnly = readOnly;
        Discard = discard;
        Name = name;
        Description = description ?? Describe(image);
        _zeroGranularity = FastZeroGranularity(image);
    }

    /// <summary>
    /// Opens the image at <paramref name="path"/> (read-write ones in <paramref name="host"/>, or
    /// the shared host when null) and serves it; the export owns the image.
    /// </summary>
    public static async Task<Qcow2Export> OpenAsync(string path, string name, Qcow2OpenOptions? options = null,
        ImageHost? host = null, DiscardMode discard = DiscardMode.Unmap, CancellationToken cancellationToken = default)
    {
        options ??= new Qcow2OpenOptions();
        var image = host is null
            ? await Qcow2Image.OpenAsync(path, options, cancellationToken).ConfigureAwait(false)
            : await host.OpenAsync(path, options, cancellationToken).ConfigureAwait(false);
        return new Qcow2Export(image, name, options.ReadOnly, ownsImage: true, discard: discard);
    }

    /// <summary>The image served.</summary>
    public Qcow2Image Image => _image;

    /// <summary>What TRIM does: free the clusters (<see cref="DiscardMode.Unmap"/>) or nothing.</summary>
    public DiscardMode Discard { get; }

    /// <inheritdoc/>
    public string Name { get; }

    /// <inheritdoc/>
    public string? Description { get; }

    /// <inheritdoc/>
    /// <remarks>Set when creating the export, e.g. <c>new(...) { MetricTags = [new("tenant", "acme")] }</c>.</remarks>
    public IReadOnlyList<KeyValuePair<string, object?>> MetricTags { get; init; } = [];

    /// <inheritdoc/>
    /// <remarks>Set when creating the export, e.g. <c>new(...) { Tenant = "acme" }</c>.</remarks>
    public string? Tenant { get; init; }

    /// <inheritdoc/>
    /// <remarks>The image's size now: a resize (or snapshot apply) of the served image shows to the next client that connects.</remarks>
    public long Size => _image.VirtualSize;

    /// <inheritdoc/>
    /// <remarks>
    /// True only for an export or image opened read-only (writes: EPERM). An image that turns
    /// read-only later (failed fsync, corruption) stays a writable export whose writes fail with
    /// EIO and the reason, so clients see the fault rather than a permission problem.
    /// </remarks>
    public bool IsReadOnly => _readOnly || (_image.IsReadOnly && _image.ReadOnlyReason is null);

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        // Hot path: no state machine when the image answers synchronously (cached, mapped reads).
        try
        {
            return Guard(_image.ReadAsync(offset, buffer, cancellationToken));
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            return ValueTask.FromException(mapped);
        }
    }

    /// <inheritdoc/>
    public bool TryReadNow(long offset, Span<byte> buffer) => _image.TryReadNow(offset, buffer);

    /// <inheritdoc/>
    public bool TryStartRead(long offset, byte[] buffer, int index, int count, IReadCompletion completion) =>
        _image.TryStartRead(offset, buffer, index, count, completion);

    /// <inheritdoc/>
    public HostFileRange? TryPinFileRange(long offset, int length)
    {
        try
        {
            return _image.TryPinFileRange(offset, length);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return null; // the ordinary read meets it again and reports it
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Yes for a write whose first cluster needs a new mapping (an allocating write, which the image's table actors
    /// carry out whole); no where the image overwrites its own cluster in place on the calling thread
    /// (<see cref="Qcow2Image.TryStartWrite"/>).
    /// </remarks>
    public bool TryStartWrite(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken, out ValueTask write)
    {
        write = default;
        if (WriteRefusal() is not null) return false;
        try
        {
            if (!_image.TryStartWrite(offset, data, cancellationToken, out var started)) return false;
            write = Guard(started);
            return true;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return false; // the ordinary write meets it again and reports it
        }
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        Write(offset, data, fua, inline: false, cancellationToken);

    /// <inheritdoc/>
    /// <remarks>The table actor the write needs runs it on this thread when it has nothing else queued (<see cref="Qcow2Image.WriteInlineAsync"/>).</remarks>
    public ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        Write(offset, data, fua: false, inline: true, cancellationToken);

    private ValueTask Write(long offset, ReadOnlyMemory<byte> data, bool fua, bool inline, CancellationToken cancellationToken)
    {
        if (WriteRefusal() is { } refused) return ValueTask.FromException(refused);
        try
        {
            return Guard(inline ? _image.WriteInlineAsync(offset, data, cancellationToken) : _image.WriteAsync(offset, data, fua, cancellationToken));
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            return ValueTask.FromException(mapped);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The engine zeroes whole clusters (subclusters with extended L2) in metadata and writes
    /// zeroes into the partial ones at the edges; so FAST_ZERO is honoured only for ranges of
    /// whole clusters of a v3 image. <paramref name="mayUnmap"/> lets the engine free the clusters.
    /// </remarks>
    public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken)
    {
        if (WriteRefusal() is { } refused) return ValueTask.FromException(refused);
        if (fastZero && !CanZeroFast(offset, length))
            return ValueTask.FromException(new NbdException(NbdError.NotSupported, _zeroGranularity == 0
                ? "this image cannot zero without writing data (v2 image, external data file or raw)"
                : $"zeroing {offset}+{length} would write data: only whole {_zeroGranularity}-byte clusters zero by metadata"));
        try
        {
            return Guard(_image.WriteZeroesAsync(offset, length, unmap: mayUnmap && Discard == DiscardMode.Unmap, fua: fua, cancellationToken));
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            return ValueTask.FromException(mapped);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// With <see cref="DiscardMode.Unmap"/> whole clusters in the range are discarded (the engine
    /// leaves partial clusters as they are); with <see cref="DiscardMode.Ignore"/> nothing changes.
    /// </remarks>
    public async ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        if (WriteRefusal() is { } refused) throw refused;
        try
        {
            if (Discard == DiscardMode.Unmap) await _image.DiscardAsync(offset, length, cancellationToken).ConfigureAwait(false);
            if (fua) await _image.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            throw mapped;
        }
    }

    /// <inheritdoc/>
    /// <remarks>The image's flush is global: data, then the journal batch, for every connection's writes.</remarks>
    public ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        try
        {
            return Guard(_image.FlushAsync(cancellationToken));
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            return ValueTask.FromException(mapped);
        }
    }

    /// <inheritdoc/>
    public async ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        length = Math.Min(length, Size - offset);
        var extents = new List<NbdExtent>();
        long pendingLength = 0;
        var pendingFlags = NbdExtentFlags.None;
        try
        {
            await foreach (var e in _image.GetMapAsync(offset, length, cancellationToken).ConfigureAwait(false))
            {
                var flags = Flags(e);
                if (pendingLength > 0 && flags == pendingFlags)
                {
                    pendingLength += e.Length;
                    continue;
                }
                if (pendingLength > 0)
                {
                    extents.Add(new NbdExtent(pendingLength, pendingFlags));
                    // Enough for one reply: the client asks again from where this one ends.
                    if (extents.Count == MaxExtentsPerReply) return extents;
                }
                pendingLength = e.Length;
                pendingFlags = flags;
            }
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            throw mapped;
        }
        if (pendingLength > 0) extents.Add(new NbdExtent(pendingLength, pendingFlags));
        // A zero-length request is refused by the server; a well-formed map always covers the range.
        if (extents.Count == 0) extents.Add(new NbdExtent(Math.Max(length, 1), NbdExtentFlags.None));
        return extents;
    }

    /// <inheritdoc/>
    /// <remarks>Set when creating the export (<c>q2a serve -A</c>, or the host's <c>allocation-depth</c>).</remarks>
    public bool AllocationDepth { get; init; }

    /// <inheritdoc/>
    /// <remarks>
    /// Set when creating the export (<c>q2a serve -B NAME</c>, or the host's <c>bitmaps</c>); each must be a
    /// persistent bitmap of the image that QEMU would export: present, and not inconsistent (left in use).
    /// </remarks>
    /// <exception cref="ArgumentException">A bitmap is missing or inconsistent; the message is qemu-nbd's.</exception>
    public IReadOnlyList<string> DirtyBitmaps
    {
        get => _dirtyBitmaps;
        init => _dirtyBitmaps = CheckBitmaps(value);
    }

    /// <inheritdoc/>
    /// <remarks>From <see cref="Qcow2Image.GetAllocationDepthAsync"/>, whose rules are qemu-nbd's.</remarks>
    public async ValueTask<IReadOnlyList<NbdMetaExtent>> GetAllocationDepthAsync(long offset, long length, CancellationToken cancellationToken)
    {
        length = Math.Min(length, Size - offset);
        var extents = new List<NbdMetaExtent>();
        try
        {
            await foreach (var e in _image.GetAllocationDepthAsync(offset, length, cancellationToken).ConfigureAwait(false))
            {
                var depth = (uint)e.Depth;
                if (extents.Count > 0 && extents[^1].Flags == depth)
                {
                    extents[^1] = extents[^1] with { Length = extents[^1].Length + e.Length };
                    continue;
                }
                // Enough for one reply: the client asks again from where this one ends.
                if (extents.Count == MaxExtentsPerReply) break;
                extents.Add(new NbdMetaExtent(e.Length, depth));
            }
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            throw mapped;
        }
        return extents;
    }

    /// <summary>
    /// qemu-nbd's mapping of block status to <c>base:allocation</c>: a hole unless the bytes are
    /// stored data, zero when they read as zeroes.
    /// </summary>
    public static NbdExtentFlags Flags(ImageExtent extent) =>
        (extent.Data ? NbdExtentFlags.None : NbdExtentFlags.Hole) | (extent.Zero ? NbdExtentFlags.Zero : NbdExtentFlags.None);

    /// <summary>
    /// True when zeroing [offset, offset + length) changes only metadata: a v3 qcow2 image without
    /// an external data file, and a range of whole (sub)clusters (the disk's end counts as a boundary).
    /// </summary>
    internal bool CanZeroFast(long offset, long length)
    {
        if (_zeroGranularity == 0) return false;
        long end = offset + length;
        return offset % _zeroGranularity == 0 && (end % _zeroGranularity == 0 || end == Size);
    }

    private static int FastZeroGranularity(Qcow2Image image) =>
        image.Header is { Version: >= 3 } header && image.Info.DataFile is null ? header.SubclusterSize : 0;

    private static string Describe(Qcow2Image image)
    {
        var info = image.Info;
        var text = info.ClusterSize is { } cluster
            ? string.Create(CultureInfo.InvariantCulture, $"{info.Format} image {Path.GetFileName(info.FileName)}, {cluster / 1024} KiB clusters")
            : string.Create(CultureInfo.InvariantCulture, $"{info.Format} image {Path.GetFileName(info.FileName)}");
        return info.BackingFile is { } backing ? $"{text}, backing {backing}" : text;
    }

    /// <summary>
    /// EPERM for an export opened read-only; EIO naming the cause once the image has turned
    /// read-only (the write was allowed, the image failed), as qemu-nbd answers after an I/O error.
    /// </summary>
    private NbdException? WriteRefusal()
    {
        if (_readOnly) return new NbdException(NbdError.NotPermitted, $"export '{Name}' is read-only");
        if (_image.ReadOnlyReason is { } reason) return new NbdException(NbdError.IoError, $"'{Name}' turned read-only: {reason}");
        if (_image.IsReadOnly) return new NbdException(NbdError.NotPermitted, $"'{Name}' is open read-only");
        return null;
    }

    private static ValueTask Guard(ValueTask task) => task.IsCompletedSuccessfully ? ValueTask.CompletedTask : Await(task);

    private static async ValueTask Await(ValueTask task)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            throw mapped;
        }
    }

    /// <summary>
    /// The errno for what the engine threw, or null to let the exception through (the server maps
    /// NbdException, IOException errnos and cancellation itself).
    /// </summary>
    internal static NbdException? Translate(Exception ex) => ex switch
    {
        NbdException or OperationCanceledException => null,
        Qcow2ImageCorruptException => new NbdException(NbdError.IoError, ex.Message, ex),
        ObjectDisposedException => new NbdException(NbdError.Shutdown, "the image is closing", ex),
        _ => null,
    };

    /// <summary>Closes the image when the export owns it; flush first for a clean close.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_ownsImage) await _image.DisposeAsync().ConfigureAwait(false);
    }
}
