namespace Qcow2Actors.Nbd.Exports;

/// <summary>
/// A sparse in-memory export: pages are allocated on first write, so block status reports
/// real holes and data, like a thin-provisioned disk. For tests and demos; it keeps nothing.
/// </summary>
public sealed class MemoryExport : INbdExport
{
    private readonly Dictionary<long, byte[]> _pages = new();
    private readonly Lock _lock = new();
    private long _flushCount;

    /// <summary>Creates an all-hole export of <paramref name="size"/> bytes.</summary>
    /// <param name="name">Export name.</param>
    /// <param name="size">Size in bytes.</param>
    /// <param name="pageSize">Allocation granularity (a power of two); holes and data are reported in these units.</param>
    /// <param name="isReadOnly">Advertise the export as read-only.</param>
    /// <param name="description">Optional description shown by NBD_OPT_LIST.</param>
    public MemoryExport(string name, long size, int pageSize = 4096, bool isReadOnly = false, string? description = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (pageSize <= 0 || (pageSize & (pageSize - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(pageSize), "must be a power of two");
        Name = name;
        Size = size;
        PageSize = pageSize;
        IsReadOnly = isReadOnly;
        Description = description;
    }

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
    public long Size { get; }

    /// <inheritdoc/>
    public bool IsReadOnly { get; }

    /// <summary>Allocation granularity in bytes.</summary>
    public int PageSize { get; }

    /// <summary>How many flushes the export has seen (FUA counts as one).</summary>
    public long FlushCount => Interlocked.Read(ref _flushCount);

    /// <summary>Writes directly, bypassing NBD (and the read-only flag); for seeding test data.</summary>
    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        CheckRange(offset, data.Length);
        lock (_lock)
        {
            var done = 0;
            while (done < data.Length)
            {
                var (page, within, take) = Locate(offset + done, data.Length - done);
                if (!_pages.TryGetValue(page, out var bytes)) _pages[page] = bytes = new byte[PageSize];
                data.Slice(done, take).CopyTo(bytes.AsSpan(within));
                done += take;
            }
        }
    }

    /// <summary>Reads directly into <paramref name="buffer"/>; holes read as zeroes.</summary>
    public void Read(long offset, Span<byte> buffer)
    {
        CheckRange(offset, buffer.Length);
        lock (_lock)
        {
            var done = 0;
            while (done < buffer.Length)
            {
                var (page, within, take) = Locate(offset + done, buffer.Length - done);
                var target = buffer.Slice(done, take);
                if (_pages.TryGetValue(page, out var bytes)) bytes.AsSpan(within, take).CopyTo(target);
                else target.Clear();
                done += take;
            }
        }
    }

    /// <summary>The whole content as one array (holes as zeroes); for comparisons in tests.</summary>
    public byte[] ToArray()
    {
        var all = new byte[checked((int)Size)];
        Read(0, all);
        return all;
    }

    /// <summary>Allocated byte ranges, merged and in order, clipped to <see cref="Size"/>.</summary>
    public IReadOnlyList<(long Offset, long Length)> AllocatedRanges()
    {
        long[] pages;
        lock (_lock) pages = [.. _pages.Keys];
        Array.Sort(pages);
        var ranges = new List<(long Offset, long Length)>();
        foreach (var page in pages)
        {
            var start = page * PageSize;
            var length = Math.Min(PageSize, Size - start);
            if (ranges.Count > 0 && ranges[^1].Offset + ranges[^1].Length == start)
                ranges[^1] = (ranges[^1].Offset, ranges[^1].Length + length);
            else
                ranges.Add((start, length));
        }
        return ranges;
    }

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Read(offset, buffer.Span);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        Write(offset, data.Span);
        if (fua) Interlocked.Increment(ref _flushCount);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    /// <remarks>Always fast here, so FAST_ZERO never fails.</remarks>
    public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        lock (_lock)
        {
            long done = 0;
            while (done < length)
            {
                var (page, within, take) = Locate(offset + done, length - done);
                var whole = within == 0 && take == PageSize;
                if (mayUnmap && whole) _pages.Remove(page);
                else if (_pages.TryGetValue(page, out var bytes)) bytes.AsSpan(within, take).Clear();
                else if (!mayUnmap) _pages[page] = new byte[PageSize]; // NO_HOLE: keep the range provisioned
                done += take;
            }
        }
        if (fua) Interlocked.Increment(ref _flushCount);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    /// <remarks>Drops whole pages only; partial pages keep their bytes, which trim allows.</remarks>
    public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        lock (_lock)
        {
            long done = 0;
            while (done < length)
            {
                var (page, within, take) = Locate(offset + done, length - done);
                if (within == 0 && take == PageSize) _pages.Remove(page);
                done += take;
            }
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _flushCount);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        var extents = new List<NbdExtent>();
        lock (_lock)
        {
            long done = 0;
            while (done < length)
            {
                var (page, _, take) = Locate(offset + done, length - done);
                var flags = _pages.ContainsKey(page) ? NbdExtentFlags.None : NbdExtentFlags.Hole | NbdExtentFlags.Zero;
                if (extents.Count > 0 && extents[^1].Flags == flags) extents[^1] = extents[^1] with { Length = extents[^1].Length + take };
                else extents.Add(new NbdExtent(take, flags));
                done += take;
            }
        }
        return ValueTask.FromResult<IReadOnlyList<NbdExtent>>(extents);
    }

    private (long Page, int Within, int Take) Locate(long position, long remaining)
    {
        var page = position / PageSize;
        var within = (int)(position % PageSize);
        var take = (int)Math.Min(PageSize - within, remaining);
        return (page, within, take);
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
            throw new NbdException(NbdError.InvalidArgument, $"range {offset}+{length} is outside the {Size}-byte export");
    }
}
