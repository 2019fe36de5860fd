namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A copy-on-write view of a read-only device: reads fall through to the device below, writes
/// land in memory pages and never reach it. Lets recovery run against an image without
/// changing a byte of it, so a reader sees exactly what the same recovery would leave on disk.
/// After <see cref="Seal"/> it is read-only and safe for any number of concurrent readers.
/// </summary>
public sealed class CopyOnWriteBlockDevice : BlockDevice
{
    private const int PageBits = 12;
    private const int PageSize = 1 << PageBits;

    private readonly IBlockDevice _below;
    private readonly Dictionary<long, byte[]> _pages = new();
    private readonly Lock _gate = new();
    private long _length;
    // Bytes of the device below at or past this offset read as zeros (after a shrink, as a file's would).
    private long _belowLimit;
    private bool _sealed;

    /// <summary>Wraps <paramref name="below"/>, which this device owns and disposes.</summary>
    public CopyOnWriteBlockDevice(IBlockDevice below)
    {
        ArgumentNullException.ThrowIfNull(below);
        _below = below;
        _length = below.Length;
        _belowLimit = _length;
    }

    /// <inheritdoc />
    public override string Name => _below.Name;

    /// <inheritdoc />
    public override bool IsReadOnly => Volatile.Read(ref _sealed);

    /// <summary>Bytes held in memory by writes so far.</summary>
    public long OverlayBytes
    {
        get { lock (_gate) return (long)_pages.Count * PageSize; }
    }

    /// <inheritdoc />
    public override long Length
    {
        get { lock (_gate) return _length; }
    }

    /// <summary>Refuses every later write: from here on the content is fixed.</summary>
    public void Seal() => Volatile.Write(ref _sealed, true);

    /// <inheritdoc />
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken) =>
        new(ReadPages(buffer.Span, offset));

    private int ReadPages(Span<byte> buffer, long offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        long length = Length;
        if (offset >= length) return 0;
        int n = (int)Math.Min(buffer.Length, length - offset);
        int done = 0;
        while (done < n)
        {
            long pos = offset + done;
            long page = pos >> PageBits;
            int inPage = (int)(pos & (PageSize - 1));
            int chunk = Math.Min(n - done, PageSize - inPage);
            byte[]? data;
            long limit;
            lock (_gate)
            {
                _pages.TryGetValue(page, out data);
                limit = _belowLimit;
            }
            var target = buffer.Slice(done, chunk);
            if (data is not null)
            {
                data.AsSpan(inPage, chunk).CopyTo(target);
            }
            else
            {
                // Whole runs of pages the overlay does not hold go to the device below in one read.
                while (done + chunk < n && !Holds((offset + done + chunk) >> PageBits))
                    chunk = Math.Min(n - done, chunk + PageSize);
                target = buffer.Slice(done, chunk);
                ReadBelow(target, pos, limit);
            }
            done += chunk;
        }
        return n;
    }

    private bool Holds(long page)
    {
        lock (_gate) return _pages.ContainsKey(page);
    }

    private void ReadBelow(Span<byte> target, long pos, long limit)
    {
        int fromBelow = (int)Math.Clamp(limit - pos, 0, target.Length);
        int got = fromBelow > 0 ? _below.Read(target[..fromBelow], pos) : 0;
        target[got..].Clear();
    }

    /// <inheritdoc />
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        WritePages(buffer.Span, offset);
        return ValueTask.CompletedTask;
    }

    private void WritePages(ReadOnlySpan<byte> buffer, long offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ThrowIfSealed();
        lock (_gate)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                long pos = offset + done;
                long page = pos >> PageBits;
                int inPage = (int)(pos & (PageSize - 1));
                int chunk = Math.Min(buffer.Length - done, PageSize - inPage);
                if (!_pages.TryGetValue(page, out var data))
                {
                    data = new byte[PageSize];
                    // A partial write keeps the rest of the page as it reads now.
                    if (chunk < PageSize) ReadBelow(data, page << PageBits, Math.Min(_belowLimit, _length));
                    _pages[page] = data;
                }
                buffer.Slice(done, chunk).CopyTo(data.AsSpan(inPage));
                done += chunk;
            }
            _length = Math.Max(_length, offset + buffer.Length);
        }
    }

    /// <summary>Nothing to make durable: the writes live only in memory, on purpose.</summary>
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        ThrowIfSealed();
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public override void SetLength(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ThrowIfSealed();
        lock (_gate)
        {
            if (length < _length)
            {
                _belowLimit = Math.Min(_belowLimit, length);
                long firstGone = (length + PageSize - 1) >> PageBits;
                foreach (var page in _pages.Keys.Where(p => p >= firstGone).ToList()) _pages.Remove(page);
                if ((length & (PageSize - 1)) != 0 && _pages.TryGetValue(length >> PageBits, out var last))
                    last.AsSpan((int)(length & (PageSize - 1))).Clear();
            }
            _length = length;
        }
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) _below.Dispose();
    }

    private void ThrowIfSealed()
    {
        if (IsReadOnly) throw new IOException($"{Name} is open read-only (changes are kept in memory only until sealed)");
    }
}
