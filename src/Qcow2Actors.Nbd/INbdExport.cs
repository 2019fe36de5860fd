namespace Qcow2Actors.Nbd;

/// <summary>
/// What the NBD server serves: a byte range with block-device semantics. The server
/// validates bounds, flags and read-only access before calling in, so an implementation
/// sees only in-range requests. Calls arrive concurrently, from many connections at once.
/// </summary>
/// <remarks>
/// The server advertises <c>NBD_FLAG_CAN_MULTI_CONN</c>, so <see cref="FlushAsync"/> and
/// FUA must make durable every write any connection has completed, not only the caller's.
/// To choose the errno a client sees, throw <see cref="NbdException"/>; other exceptions
/// map to EIO (or ENOSPC, EPERM, EINVAL where the exception type says so).
/// </remarks>
public interface INbdExport
{
    /// <summary>The name clients select the export by (NBD_OPT_GO / NBD_OPT_EXPORT_NAME).</summary>
    string Name { get; }

    /// <summary>Optional human-readable text sent with NBD_OPT_LIST and NBD_INFO_DESCRIPTION.</summary>
    string? Description => null;

    /// <summary>
    /// Extra tags for this export's metrics (<see cref="Metrics.NbdMetrics"/>), added to the
    /// <c>export</c> tag on every per-export instrument; a multi-tenant host puts
    /// <c>tenant=NAME</c> here. Read once when a client starts transmission on the export, so
    /// keep it fixed while the export is served. The keys <c>export</c>, <c>op</c>,
    /// <c>direction</c> and <c>errno</c> belong to the server and are ignored here. An export that
    /// wraps another should forward its inner export's tags. Default: none.
    /// </summary>
    IReadOnlyList<KeyValuePair<string, object?>> MetricTags => [];

    /// <summary>
    /// The tenant that owns this export (a multi-tenant host sets it), or null. The server uses it
    /// to keep tenants apart: <see cref="NbdServer.DisconnectTenantAsync"/> closes a tenant's
    /// connections, and with client identities a client sees only its own tenant's exports.
    /// Keep it fixed while the export is served. Default: none.
    /// </summary>
    string? Tenant => null;

    /// <summary>Size in bytes; fixed while the export is served.</summary>
    long Size { get; }

    /// <summary>True to advertise NBD_FLAG_READ_ONLY; the server then answers writes with EPERM itself.</summary>
    bool IsReadOnly { get; }

    /// <summary>Fills <paramref name="buffer"/> with the bytes at <paramref name="offset"/> (never past <see cref="Size"/>).</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>; with <paramref name="fua"/> it is durable before the task completes.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken);

    /// <summary>
    /// <see cref="WriteAsync"/> without FUA, asked on a thread that may wait on the disk (the connection's own receive
    /// thread, or a pool thread): the export may do the whole write there rather than hand it to threads of its own.
    /// A task not complete on return must complete at the moment the write ends: the server only sends the reply in its
    /// continuation. The default is <see cref="WriteAsync"/>.
    /// </summary>
    ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        WriteAsync(offset, data, fua: false, cancellationToken);

    /// <summary>
    /// Makes the range read as zeroes. <paramref name="mayUnmap"/> is false when the client sent
    /// NO_HOLE (the range must stay provisioned). With <paramref name="fastZero"/>, throw
    /// <see cref="NbdException"/> with <see cref="NbdError.NotSupported"/> at once, without
    /// changing anything, unless zeroing is cheaper than writing the zeroes.
    /// </summary>
    ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken);

    /// <summary>A hint that the range is no longer needed; afterwards its contents are unspecified until rewritten.</summary>
    ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken);

    /// <summary>Makes every completed write, from every connection, durable.</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken);

    /// <summary>
    /// The <c>base:allocation</c> state of the range starting at <paramref name="offset"/>, as
    /// consecutive extents from <paramref name="offset"/>. The list may cover less than
    /// <paramref name="length"/> (at least one extent) or run past it; the server trims it.
    /// </summary>
    ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken);

    /// <summary>
    /// True to offer the <c>qemu:allocation-depth</c> metadata context (qemu-nbd's <c>-A</c>): for each
    /// extent, 0 when no layer of the backing chain allocates it, 1 when this image does, N when the
    /// (N-1)th backing file does. Read when a client negotiates; keep it fixed while served. Default: false.
    /// </summary>
    bool AllocationDepth => false;

    /// <summary>
    /// The dirty bitmaps offered as <c>qemu:dirty-bitmap:NAME</c> metadata contexts (qemu-nbd's <c>-B</c>),
    /// in the order NBD_OPT_LIST_META_CONTEXT names them. Read when a client negotiates; keep it fixed
    /// while served. Default: none.
    /// </summary>
    IReadOnlyList<string> DirtyBitmaps => [];

    /// <summary>
    /// Reads [<paramref name="offset"/>, + <paramref name="buffer"/>.Length) into <paramref name="buffer"/> and
    /// returns true only when it can do so without waiting (the data is in memory); otherwise returns false at
    /// once and the server calls <see cref="ReadAsync"/> from a thread that may wait. The server asks first for
    /// small reads, on the thread that parsed the request, so cached reads skip a thread hand-off. Must never
    /// block, throw, or fail a request: any doubt is a false. The default always says false.
    /// </summary>
    bool TryReadNow(long offset, Span<byte> buffer) => false;

    /// <summary>
    /// Starts reading <paramref name="count"/> bytes at <paramref name="offset"/> into <paramref name="buffer"/>
    /// from <paramref name="index"/> with no thread waiting for the disk, and returns true: <paramref name="completion"/>
    /// is then called exactly once (on a thread that must not be blocked: the server only sends the reply there),
    /// and the buffer is the export's until then. A failure reported to <paramref name="completion"/> is not the
    /// request's answer: the server then calls <see cref="ReadAsync"/>, which reports or retries it. Returns false,
    /// having started nothing, when it cannot (the server then calls <see cref="ReadAsync"/> from a thread that
    /// may wait). The server asks after <see cref="TryReadNow"/> declined. Must not throw. The default says false.
    /// </summary>
    bool TryStartRead(long offset, byte[] buffer, int index, int count, Engine.IReadCompletion completion) => false;

    /// <summary>
    /// Starts writing <paramref name="data"/> at <paramref name="offset"/> with no thread waiting for the disk, and
    /// returns true with the write in <paramref name="write"/>; returns false, having started nothing, when it cannot
    /// (the server then calls <see cref="WriteAsync"/> from a thread that may wait). The server asks, for WRITEs without
    /// FUA, on the thread that parsed the request when that thread must not block (the socket engine's, with inline
    /// socket completions), so a write the export hands to threads of its own skips a thread hand-off. The server
    /// keeps <paramref name="data"/> unchanged until the write completes, and only sends the reply in its continuation,
    /// so the write may complete on a thread that must not be blocked. Must not block or throw. The default says false.
    /// </summary>
    bool TryStartWrite(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken, out ValueTask write)
    {
        write = default;
        return false;
    }

    /// <summary>
    /// Pins [<paramref name="offset"/>, + <paramref name="length"/>) where its bytes lie in a host file's page cache
    /// and returns the pin, so the server sends them straight from the file (<c>sendfile</c>) rather than copying
    /// them through a buffer; null when it cannot (the server then calls <see cref="ReadAsync"/>). The server
    /// asks only for reads larger than it answers inline, on connections without TLS, from a thread that may wait,
    /// and disposes the pin once the bytes are out (or copied, when the client is slow to take them). Must not
    /// throw. The default says null.
    /// </summary>
    Engine.HostFileRange? TryPinFileRange(long offset, int length) => null;

    /// <summary>
    /// The <c>qemu:allocation-depth</c> of the range starting at <paramref name="offset"/>, as consecutive
    /// extents whose <see cref="NbdMetaExtent.Flags"/> is the depth (see <see cref="AllocationDepth"/>).
    /// Called only when <see cref="AllocationDepth"/> is true; may cover less or more than
    /// <paramref name="length"/> (the server trims), at least one extent.
    /// </summary>
    ValueTask<IReadOnlyList<NbdMetaExtent>> GetAllocationDepthAsync(long offset, long length, CancellationToken cancellationToken) =>
        ValueTask.FromException<IReadOnlyList<NbdMetaExtent>>(new NbdException(NbdError.InvalidArgument, $"export '{Name}' has no allocation depth"));

    /// <summary>
    /// The dirty bitmap <paramref name="bitmap"/> (one of <see cref="DirtyBitmaps"/>) over the range starting
    /// at <paramref name="offset"/>, as consecutive extents whose <see cref="NbdMetaExtent.Flags"/> is
    /// <see cref="NbdMetaExtent.Dirty"/> where a bit is set and 0 where clear. May cover less or more than
    /// <paramref name="length"/> (the server trims), at least one extent.
    /// </summary>
    ValueTask<IReadOnlyList<NbdMetaExtent>> GetDirtyBitmapAsync(string bitmap, long offset, long length, CancellationToken cancellationToken) =>
        ValueTask.FromException<IReadOnlyList<NbdMetaExtent>>(new NbdException(NbdError.InvalidArgument, $"export '{Name}' has no bitmap '{bitmap}'"));
}

/// <summary><c>base:allocation</c> state bits of an extent (NBD_STATE_*).</summary>
[Flags]
public enum NbdExtentFlags : uint
{
    /// <summary>Allocated, contents unknown: always a safe answer.</summary>
    None = 0,

    /// <summary>NBD_STATE_HOLE: not allocated in the backing store; writing here may need space.</summary>
    Hole = 1,

    /// <summary>NBD_STATE_ZERO: reads as zeroes.</summary>
    Zero = 2,
}

/// <summary>One run of bytes sharing a <c>base:allocation</c> state.</summary>
/// <param name="Length">Bytes in the run; positive.</param>
/// <param name="Flags">The run's state.</param>
public readonly record struct NbdExtent(long Length, NbdExtentFlags Flags);

/// <summary>
/// One run of bytes sharing a value in a <c>qemu:</c> metadata context: the allocation depth for
/// <c>qemu:allocation-depth</c>, <see cref="Dirty"/> or 0 for <c>qemu:dirty-bitmap:NAME</c>.
/// </summary>
/// <param name="Length">Bytes in the run; positive.</param>
/// <param name="Flags">The 32-bit status value sent on the wire for the run.</param>
public readonly record struct NbdMetaExtent(long Length, uint Flags)
{
    /// <summary>NBD_STATE_DIRTY of <c>qemu:dirty-bitmap:NAME</c>: the run's bits are set (changed since the bitmap was cleared).</summary>
    public const uint Dirty = 1;
}

/// <summary>
/// An export that gives each client connection its own view (state kept per connection, e.g. which of its
/// writes a flush has covered). When a client starts transmission on it, the server calls
/// <see cref="ForConnection"/> once and serves that connection from the view; when the connection ends it
/// disposes the view if it is <see cref="IDisposable"/>. The view must report this export's name, size,
/// flags, tenant and metric tags.
/// </summary>
public interface INbdConnectionScopedExport : INbdExport
{
    /// <summary>The view one new connection is served from.</summary>
    INbdExport ForConnection();
}
