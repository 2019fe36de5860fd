using System.Buffers;
using System.Runtime.CompilerServices;
using Qcow2Actors.Engine.Compression;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// The lock-free read side of one qcow2 image: maps guest ranges through the current
/// <see cref="ImageView"/> and the shared <see cref="L2Cache"/>, then reads data from the image
/// (or external data) file, zeros, the backing chain, or decompressed clusters. It never writes
/// and never takes a lock; the writer changes what it sees only by publishing into
/// <see cref="Views"/> and <see cref="L2Tables"/>.
/// </summary>
internal sealed class Qcow2Layer : IImageLayer
{
    private sealed record DecompressedCluster(long HostOffset, byte[] Data);

    private readonly IBlockDevice _file;
    private readonly IBlockDevice? _dataFile;
    private readonly string? _dataFileName;
    private readonly ICompressionCodec _codec;
    private readonly Func<long, CancellationToken, Task<L2View>> _loadL2;
    // Host-file holes inside data runs (block status only); null for images not on a host file.
    private readonly HostHoleStatus? _hostHoles;
    // The last decompressed cluster: sequential reads of a compressed image touch each
    // cluster many times in small pieces, and decompressing it once per piece would dominate.
    private DecompressedCluster? _lastDecompressed;

    public Qcow2Layer(string fileName, IBlockDevice file, ImageViewCell views, L2Cache l2Tables, ICompressionCodec codec,
        IImageLayer? backing, IBlockDevice? dataFile, string? dataFileName, Metrics.ImageMetrics metrics, HostHoleStatus? hostHoles = null)
    {
        _hostHoles = hostHoles;
        Metrics = metrics;
        FileName = fileName;
        _file = file;
        Views = views;
        L2Tables = l2Tables;
        _codec = codec;
        Backing = backing;
        _dataFile = dataFile;
        _dataFileName = dataFileName;
        _loadL2 = LoadL2Async;
    }

    public string FileName { get; }
    public string Format => "qcow2";
    public long Size => Views.Current.VirtualSize;
    public IImageLayer? Backing { get; }

    /// <summary>Where the writer publishes a new header-level view (L1, size).</summary>
    public ImageViewCell Views { get; }

    /// <summary>Where this image's (and its chain's) measurements go.</summary>
    public Metrics.ImageMetrics Metrics { get; }

    /// <summary>Where the writer publishes changed L2 tables.</summary>
    public L2Cache L2Tables { get; }

    /// <summary>
    /// Writer side: drops the remembered decompressed cluster. Call it whenever compressed bytes
    /// are freed, because the memo is keyed by host offset and a new compressed cluster may land there.
    /// </summary>
    public void ForgetDecompressed() => Volatile.Write(ref _lastDecompressed, null);

    /// <summary>The image file.</summary>
    public IBlockDevice File => _file;

    /// <summary>The external data file, when the image has one.</summary>
    public IBlockDevice? DataFile => _dataFile;

    /// <summary>The L2 table covering <paramref name="guestOffset"/> in <paramref name="view"/>, or null when its L1 entry is 0.</summary>
    public ValueTask<L2View?> GetL2Async(ImageView view, long guestOffset, CancellationToken cancellationToken)
    {
        long l2Offset = GuestMapper.L2Offset(view, guestOffset);
        if (l2Offset == 0) return new ValueTask<L2View?>((L2View?)null);
        if (L2Tables.TryGet(l2Offset, out var cached))
        {
            Metrics.L2Hit();
            return new ValueTask<L2View?>(cached);
        }
        Metrics.L2Miss();
        return LoadViaCacheAsync(l2Offset, guestOffset, cancellationToken);
    }

    private async ValueTask<L2View?> LoadViaCacheAsync(long l2Offset, long guestOffset, CancellationToken cancellationToken)
    {
        try
        {
            return await L2Tables.GetOrLoadAsync(l2Offset, _loadL2, cancellationToken).ConfigureAwait(false);
        }
        catch (Qcow2ImageCorruptException ex)
        {
            throw GuestMapper.Corrupt(guestOffset, ex.Message);
        }
    }

    private async Task<L2View> LoadL2Async(long l2Offset, CancellationToken cancellationToken)
    {
        var g = Views.Current.Geometry;
        int size = (int)g.ClusterSize;
        long fileLength = _file.Length;
        if (l2Offset > fileLength - size)
            throw new Qcow2ImageCorruptException($"L2 table at 0x{l2Offset:X} lies past the end of {FileName} ({fileLength} bytes)");
        var buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            int n = await _file.ReadAsync(buffer.AsMemory(0, size), l2Offset, cancellationToken).ConfigureAwait(false);
            if (n < size)
                throw new Qcow2ImageCorruptException($"L2 table at 0x{l2Offset:X} lies past the end of {FileName}");
            return L2View.Parse(buffer.AsSpan(0, size), l2Offset, g.ExtendedL2);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Maps one maximal run starting at <paramref name="offset"/> (at most <paramref name="length"/> bytes).</summary>
    public async ValueTask<GuestExtent> MapRunAsync(ImageView view, long offset, long length, CancellationToken cancellationToken)
    {
        var l2 = await GetL2Async(view, offset, cancellationToken).ConfigureAwait(false);
        return GuestMapper.MapRun(view.Geometry, l2, offset, length);
    }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        ReadAsync(Views.Current, offset, buffer, cancellationToken);

    /// <summary>Reads through <paramref name="view"/> (the active one, or a snapshot's).</summary>
    // Pooled builders: the state machines of the per-request path are reused, not allocated.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask ReadAsync(ImageView view, long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        long end = offset + buffer.Length;
        long pos = offset;
        while (pos < end)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var l2 = await GetL2Async(view, pos, cancellationToken).ConfigureAwait(false);
            var run = GuestMapper.MapRun(view.Geometry, l2, pos, end - pos);
            var slice = buffer.Slice((int)(pos - offset), (int)run.Length);
            switch (run.Kind)
            {
                case ExtentKind.Data:
                    await ReadDataAsync(run, slice, cancellationToken).ConfigureAwait(false);
                    break;
                case ExtentKind.Zero:
                    slice.Span.Clear();
                    break;
                case ExtentKind.Unallocated:
                    await ReadBackingAsync(pos, slice, cancellationToken).ConfigureAwait(false);
                    break;
                case ExtentKind.Compressed:
                    var cluster = await DecompressAsync(view.Geometry, run, cancellationToken).ConfigureAwait(false);
                    cluster.AsSpan((int)(pos & (view.Geometry.ClusterSize - 1)), slice.Length).CopyTo(slice.Span);
                    break;
            }
            pos += run.Length;
        }
    }

    /// <summary>
    /// Fills <paramref name="buffer"/> from <paramref name="offset"/> through the active view when nothing on
    /// the way would wait: every L2 table already cached, data in the host's page cache, zeros, or
    /// unallocated space with no backing file under it. False (the buffer then holds nothing of use) sends the
    /// caller to <see cref="ReadAsync(long, Memory{byte}, CancellationToken)"/>, which also reports any damage.
    /// </summary>
    public bool TryReadNow(long offset, Span<byte> buffer)
    {
        if ((_dataFile ?? _file) is not INonBlockingRead device) return false;
        var view = Views.Current;
        long end = offset + buffer.Length;
        long pos = offset;
        int hits = 0;
        try
        {
            while (pos < end)
            {
                long l2Offset = GuestMapper.L2Offset(view, pos);
                L2View? l2 = null;
                if (l2Offset != 0)
                {
                    if (!L2Tables.TryGet(l2Offset, out var cached)) return false;
                    l2 = cached;
                    hits++;
                }
                var run = GuestMapper.MapRun(view.Geometry, l2, pos, end - pos);
                var slice = buffer.Slice((int)(pos - offset), (int)run.Length);
                switch (run.Kind)
                {
                    case ExtentKind.Data:
                        if (!device.TryReadNow(slice, run.HostOffset)) return false;
                        break;
                    case ExtentKind.Zero:
                        slice.Clear();
                        break;
                    case ExtentKind.Unallocated when Backing is null || pos >= Backing.Size:
                        slice.Clear();
                        break;
                    default:
                        return false; // backing data or a compressed cluster: the ordinary path
                }
                pos += run.Length;
            }
        }
        catch (Qcow2ImageCorruptException)
        {
            return false; // the ordinary read meets it again and reports it
        }
        // Counted only now: a read that falls back counts its lookups on the ordinary path.
        for (int i = 0; i < hits; i++) Metrics.L2Hit();
        return true;
    }

    /// <summary>
    /// Starts reading [<paramref name="offset"/>, + <paramref name="count"/>) into <paramref name="buffer"/> at
    /// <paramref name="index"/> on the host file's asynchronous path and returns true (<paramref name="completion"/>
    /// then hears the end), when the whole range is one run of stored data in this file, its L2 table is cached
    /// and the device can read asynchronously. False, with nothing started, sends the caller to the ordinary read.
    /// </summary>
    public bool TryStartRead(long offset, byte[] buffer, int index, int count, IHostReadCompletion completion)
    {
        if ((_dataFile ?? _file) is not IAsyncHostRead device || !TryMapCachedRun(offset, count, out long host)) return false;
        if (!device.TryStartRead(buffer, index, count, host, completion)) return false;
        Metrics.L2Hit();
        return true;
    }

    /// <summary>
    /// Maps [<paramref name="offset"/>, + <paramref name="count"/>) through the active view to one run of stored
    /// data in this layer's file (or external data file) and returns its host offset and the device that holds
    /// it, when its L2 table is cached and the device's bytes are a host file's. False otherwise, having waited
    /// for nothing (zeros, backing data, compressed clusters, several runs, damage: the ordinary read's).
    /// </summary>
    public bool TryMapFileRun(long offset, int count, out long hostOffset, out IFileRangeSource? source)
    {
        hostOffset = -1;
        source = (_dataFile ?? _file) as IFileRangeSource;
        return source is not null && TryMapCachedRun(offset, count, out hostOffset);
    }

    /// <summary>
    /// The host offset of [<paramref name="offset"/>, + <paramref name="count"/>) when the active view maps all of it
    /// to one run of stored data through a cached L2 table; false otherwise, having waited for nothing.
    /// </summary>
    private bool TryMapCachedRun(long offset, int count, out long hostOffset)
    {
        hostOffset = -1;
        var view = Views.Current;
        try
        {
            long l2Offset = GuestMapper.L2Offset(view, offset);
            if (l2Offset == 0 || !L2Tables.TryGet(l2Offset, out var l2)) return false;
            var run = GuestMapper.MapRun(view.Geometry, l2, offset, count);
            if (run.Kind != ExtentKind.Data || run.Length < count) return false;
            hostOffset = run.HostOffset;
            return true;
        }
        catch (Qcow2ImageCorruptException)
        {
            return false; // the ordinary read meets it again and reports it
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReadDataAsync(GuestExtent run, Memory<byte> slice, CancellationToken cancellationToken)
    {
        // Transient errors are retried inside the device (ResilientBlockDevice), not here.
        int n = await (_dataFile ?? _file).ReadAsync(slice, run.HostOffset, cancellationToken).ConfigureAwait(false);
        // A file may end inside its last cluster (QEMU does not write zero tails): those bytes are zeros.
        if (n < slice.Length) slice.Span[n..].Clear();
    }

    private async ValueTask ReadBackingAsync(long offset, Memory<byte> slice, CancellationToken cancellationToken)
    {
        var backing = Backing;
        long available = backing is null ? 0 : Math.Clamp(backing.Size - offset, 0, slice.Length);
        if (available > 0)
            await backing!.ReadAsync(offset, slice[..(int)available], cancellationToken).ConfigureAwait(false);
        slice.Span[(int)available..].Clear();
    }

    private async ValueTask<byte[]> DecompressAsync(ImageGeometry g, GuestExtent run, CancellationToken cancellationToken)
    {
        var last = Volatile.Read(ref _lastDecompressed);
        if (last is not null && last.HostOffset == run.HostOffset) return last.Data;

        long fileLength = _file.Length;
        if (run.HostOffset >= fileLength)
            throw GuestMapper.Corrupt(run.Offset, $"compressed cluster data at 0x{run.HostOffset:X} lies past the end of {FileName} ({fileLength} bytes)");
        var input = ArrayPool<byte>.Shared.Rent(run.CompressedLength);
        var cluster = new byte[g.ClusterSize];
        try
        {
            int n = await _file.ReadAsync(input.AsMemory(0, run.CompressedLength), run.HostOffset, cancellationToken).ConfigureAwait(false);
            // The last sector of the file may be partial; the stream itself must still be complete.
            input.AsSpan(n, run.CompressedLength - n).Clear();
            _codec.Decompress(input.AsSpan(0, run.CompressedLength), cluster);
        }
        catch (Exception ex) when (ex is InvalidDataException or ArgumentException or InvalidOperationException)
        {
            throw new Qcow2ImageCorruptException(
                $"corrupt image at guest offset {run.Offset} (0x{run.Offset:X}): compressed cluster at 0x{run.HostOffset:X} ({run.CompressedLength} bytes) does not decompress ({_codec.Name}): {ex.Message}", ex);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(input);
        }
        Volatile.Write(ref _lastDecompressed, new DecompressedCluster(run.HostOffset, cluster));
        return cluster;
    }

    public ValueTask<LayerStatus> GetStatusAsync(long offset, long length, CancellationToken cancellationToken) =>
        GetStatusAsync(Views.Current, offset, length, cancellationToken);

    /// <summary>Block status through <paramref name="view"/>, with QEMU's qcow2 driver and generic-layer flags.</summary>
    public async ValueTask<LayerStatus> GetStatusAsync(ImageView view, long offset, long length, CancellationToken cancellationToken)
    {
        length = Math.Min(length, view.VirtualSize - offset);
        var run = await MapRunAsync(view, offset, length, cancellationToken).ConfigureAwait(false);
        string hostFile = _dataFileName ?? FileName;
        switch (run.Kind)
        {
            case ExtentKind.Data:
                var data = new LayerStatus(run.Length, true, false, true, run.HostOffset, hostFile);
                return _hostHoles is null ? data : _hostHoles.Refine(data);
            case ExtentKind.Compressed:
                return new LayerStatus(run.Length, true, false, true, -1, null);
            case ExtentKind.Zero:
                return new LayerStatus(run.Length, false, true, true, run.HostOffset, run.HasHostOffset ? hostFile : null);
            default:
                bool zero = Backing is null || offset >= Backing.Size;
                return new LayerStatus(run.Length, false, zero, false, run.HostOffset, run.HasHostOffset ? hostFile : null);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Backing is not null) await Backing.DisposeAsync().ConfigureAwait(false);
        _dataFile?.Dispose();
        _file.Dispose();
        L2Tables.Detach();
    }
}
