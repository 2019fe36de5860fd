using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>
/// What every node of a cluster serves as the NBD export TENANT/IMAGE of a cluster image. On the owner it calls the
/// image's own export directly (the local target, attached while this node owns the image); elsewhere it forwards
/// each request to the owner through <see cref="IOwnerChannel"/> and retries it on the next owner when the owner dies
/// or moves (bounded by <see cref="ForwardingOptions.Deadline"/>). The owner's entity runs forwarded requests here
/// too (<see cref="ServeForwardedAsync"/>), so a hand-off waits for every request in flight, local or forwarded.
/// </summary>
/// <remarks>
/// The disk contract (<see cref="DiskContract"/>): a write is acknowledged by one owner life; when a later owner
/// answers the next flush and says that life ended without a clean close, the flush fails with EIO.
/// </remarks>
internal sealed class ClusterExport : INbdConnectionScopedExport
{
    /// <summary>Reads and writes larger than this travel as several forwarded requests (remoting frames stay small).</summary>
    public const int MaxChunk = 1024 * 1024;

    private readonly IOwnerChannel _channel;
    private readonly ForwardingOptions _options;
    private readonly string _self;
    private readonly Lock _lock = new();
    private (INbdExport Target, OwnerLife Life)? _local;
    private int _inFlight;
    private TaskCompletionSource? _drained;

    /// <param name="name">The export name (TENANT/IMAGE).</param>
    /// <param name="tenant">The tenant that owns it (NBD's tenant rules apply).</param>
    /// <param name="size">The image's virtual size.</param>
    /// <param name="channel">The way to the owner.</param>
    /// <param name="options">Retry bounds and the clock.</param>
    /// <param name="self">This node's address, named in the replies it gives as owner.</param>
    public ClusterExport(string name, string tenant, long size, IOwnerChannel channel, ForwardingOptions options, string self)
    {
        Name = name;
        Tenant = tenant;
        Size = size;
        _channel = channel;
        _options = options;
        _self = self;
        MetricTags = [new("tenant", tenant)];
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public string? Tenant { get; }

    /// <inheritdoc />
    public long Size { get; }

    /// <inheritdoc />
    public bool IsReadOnly => false;

    /// <inheritdoc />
    public IReadOnlyList<KeyValuePair<string, object?>> MetricTags { get; }

    /// <summary>The disk contract state of this node's connections to the export.</summary>
    internal DiskContract Contract { get; } = new();

    /// <summary>True while this node owns the image (requests go straight to its export).</summary>
    public bool IsLocal
    {
        get { lock (_lock) return _local is not null; }
    }

    /// <summary>This node became the owner: requests (local and forwarded) go to <paramref name="target"/>, answered as <paramref name="life"/>.</summary>
    public void AttachLocal(INbdExport target, OwnerLife life)
    {
        lock (_lock) _local = (target, life);
    }

    /// <summary>
    /// This node stops owning the image: no new request reaches the local target, and the task completes once every
    /// request already running on it has finished (then the image may close).
    /// </summary>
    public Task DetachLocalAsync()
    {
        lock (_lock)
        {
            _local = null;
            if (_inFlight == 0) return Task.CompletedTask;
            _drained ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _drained.Task;
        }
    }

    private bool TryEnter(out INbdExport target, out OwnerLife life)
    {
        lock (_lock)
        {
            if (_local is not { } local)
            {
                target = null!;
                life = default;
                return false;
            }
            _inFlight++;
            (target, life) = local;
            return true;
        }
    }

    private void Exit()
    {
        lock (_lock)
        {
            if (--_inFlight == 0 && _local is null && _drained is { } drained)
            {
                _drained = null;
                drained.TrySetResult();
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (TryEnter(out var target, out _))
        {
            try
            {
                await target.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
                return;
            }
            finally
            {
                Exit();
            }
        }
        for (int done = 0; done < buffer.Length; done += MaxChunk)
        {
            int length = Math.Min(MaxChunk, buffer.Length - done);
            var reply = await ForwardAsync(new ForwardedRequest(ForwardedOp.Read, ForwardedFlags.None, offset + done, length, []), cancellationToken).ConfigureAwait(false);
            if (reply.Data.Length != length)
                throw new NbdException(NbdError.IoError, $"export '{Name}': the owner answered a read of {length} bytes with {reply.Data.Length}");
            reply.Data.CopyTo(buffer[done..]);
        }
    }

    /// <inheritdoc />
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        WriteAsync(Contract, offset, data, fua, cancellationToken);

    private async ValueTask WriteAsync(DiskContract contract, long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        if (TryEnter(out var target, out var life))
        {
            try
            {
                await target.WriteAsync(offset, data, fua, cancellationToken).ConfigureAwait(false);
                contract.Acknowledged(life);
                return;
            }
            finally
            {
                Exit();
            }
        }
        var flags = fua ? ForwardedFlags.Fua : ForwardedFlags.None;
        for (int done = 0; done < data.Length; done += MaxChunk)
        {
            int length = Math.Min(MaxChunk, data.Length - done);
            var reply = await ForwardAsync(new ForwardedRequest(ForwardedOp.Write, flags, offset + done, length, data.Slice(done, length).ToArray()), cancellationToken).ConfigureAwait(false);
            contract.Acknowledged(reply.Life);
        }
    }

    /// <inheritdoc />
    public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken) =>
        WriteZeroesAsync(Contract, offset, length, mayUnmap, fastZero, fua, cancellationToken);

    private async ValueTask WriteZeroesAsync(DiskContract contract, long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken)
    {
        if (TryEnter(out var target, out var life))
        {
            try
            {
                await target.WriteZeroesAsync(offset, length, mayUnmap, fastZero, fua, cancellationToken).ConfigureAwait(false);
                contract.Acknowledged(life);
                return;
            }
            finally
            {
                Exit();
            }
        }
        var flags = (fua ? ForwardedFlags.Fua : 0) | (mayUnmap ? ForwardedFlags.MayUnmap : 0) | (fastZero ? ForwardedFlags.FastZero : 0);
        var reply = await ForwardAsync(new ForwardedRequest(ForwardedOp.WriteZeroes, flags, offset, length, []), cancellationToken).ConfigureAwait(false);
        contract.Acknowledged(reply.Life);
    }

    /// <inheritdoc />
    public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) =>
        TrimAsync(Contract, offset, length, fua, cancellationToken);

    private async ValueTask TrimAsync(DiskContract contract, long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        if (TryEnter(out var target, out var life))
        {
            try
            {
                await target.TrimAsync(offset, length, fua, cancellationToken).ConfigureAwait(false);
                contract.Acknowledged(life);
                return;
            }
            finally
            {
                Exit();
            }
        }
        var reply = await ForwardAsync(new ForwardedRequest(ForwardedOp.Trim, fua ? ForwardedFlags.Fua : 0, offset, length, []), cancellationToken).ConfigureAwait(false);
        contract.Acknowledged(reply.Life);
    }

    /// <inheritdoc />
    /// <exception cref="NbdException">EIO: writes acknowledged by an owner that has since died (not closed clean) may be gone.</exception>
    public ValueTask FlushAsync(CancellationToken cancellationToken) => FlushAsync(Contract, cancellationToken);

    private async ValueTask FlushAsync(DiskContract contract, CancellationToken cancellationToken)
    {
        // The flush vouches for what every connection completed before it (multi-conn): each one's contract is checked.
        var covered = _connections.Keys.Append(Contract).Append(contract).Distinct().Select(c => (Contract: c, Begun: c.BeginFlush())).ToList();
        OwnerLife life;
        if (TryEnter(out var target, out life))
        {
            try
            {
                await target.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                Exit();
            }
        }
        else life = (await ForwardAsync(new ForwardedRequest(ForwardedOp.Flush, 0, 0, 0, []), cancellationToken).ConfigureAwait(false)).Life;
        List<long> lost = [];
        foreach (var (other, begun) in covered)
        {
            var gone = other.CompleteFlush(begun, life);
            lost.AddRange(gone);
            if (gone.Count > 0 && other != contract) other.MarkLost();
        }
        if (contract.TakeLoss() || lost.Count > 0)
            throw new NbdException(NbdError.IoError,
                $"export '{Name}': the owner changed without a clean close (now owner life {life.Incarnation}); writes acknowledged since the last flush may be lost");
    }

    /// <summary>A view of this export for one NBD connection: its own disk contract, everything else shared.</summary>
    public INbdExport ForConnection() => new Connection(this);

    private readonly System.Collections.Concurrent.ConcurrentDictionary<DiskContract, byte> _connections = new();

    /// <summary>One NBD connection's view (the server disposes it when the connection ends).</summary>
    private sealed class Connection : INbdExport, IDisposable
    {
        private readonly ClusterExport _export;

        public Connection(ClusterExport export)
        {
            _export = export;
            export._connections[Contract] = 0;
        }

        public DiskContract Contract { get; } = new();
        public string Name => _export.Name;
        public string? Tenant => _export.Tenant;
        public long Size => _export.Size;
        public bool IsReadOnly => false;
        public IReadOnlyList<KeyValuePair<string, object?>> MetricTags => _export.MetricTags;

        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) => _export.ReadAsync(offset, buffer, cancellationToken);
        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
            _export.WriteAsync(Contract, offset, data, fua, cancellationToken);
        public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken) =>
            _export.WriteZeroesAsync(Contract, offset, length, mayUnmap, fastZero, fua, cancellationToken);
        public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) => _export.TrimAsync(Contract, offset, length, fua, cancellationToken);
        public ValueTask FlushAsync(CancellationToken cancellationToken) => _export.FlushAsync(Contract, cancellationToken);
        public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken) =>
            _export.GetBlockStatusAsync(offset, length, cancellationToken);

        public void Dispose() => _export._connections.TryRemove(Contract, out _);
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        if (TryEnter(out var target, out _))
        {
            try
            {
                return await target.GetBlockStatusAsync(offset, length, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                Exit();
            }
        }
        var reply = await ForwardAsync(new ForwardedRequest(ForwardedOp.BlockStatus, 0, offset, length, []), cancellationToken).ConfigureAwait(false);
        return reply.Extents.Count > 0 ? reply.Extents : [new NbdExtent(length, NbdExtentFlags.None)];
    }

    /// <summary>
    /// Sends <paramref name="request"/> to the owner until one answers it (not "moved"); a failure the export
    /// reported is thrown as its errno; no answer within the deadline is EIO.
    /// </summary>
    private async Task<ForwardedReply> ForwardAsync(ForwardedRequest request, CancellationToken cancellationToken)
    {
        var time = _options.Time;
        long start = time.GetTimestamp();
        for (int attempt = 0; ; attempt++)
        {
            string why;
            bool unavailable = false;
            using (var timeout = new CancellationTokenSource(_options.AttemptTimeout, time))
            using (var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token))
            {
                try
                {
                    var reply = await _channel.SendAsync(request, linked.Token).ConfigureAwait(false);
                    if (reply.Status == ForwardedStatus.Ok) return reply;
                    if (reply.Status == ForwardedStatus.Failed)
                        throw new NbdException(reply.Error is 0 or > 108 ? NbdError.IoError : (NbdError)reply.Error, reply.Message);
                    why = reply.Message;
                }
                catch (Exception ex) when (ex is not NbdException && ex is not OutOfMemoryException && !cancellationToken.IsCancellationRequested)
                {
                    why = timeout.IsCancellationRequested ? $"no answer in {_options.AttemptTimeout.TotalSeconds:0.#} s" : ex.Message;
                    unavailable = ex is OwnerUnavailableException;
                }
            }
            var waited = time.GetElapsedTime(start);
            if (waited >= _options.Deadline)
                throw new NbdException(NbdError.IoError, $"export '{Name}': no owner answered a {request.Op} in {waited.TotalSeconds:0.#} s ({why})");
            var pause = TimeSpan.FromTicks(Math.Min(_options.MaxBackoff.Ticks, _options.FirstBackoff.Ticks << Math.Min(attempt, 16)));
            // Nothing was sent (the owner is unreachable or just left): the next look is local, and the new owner may
            // serve any moment, so a fail-over is not followed by up to a whole MaxBackoff of waiting.
            if (unavailable && pause > _options.UnavailableBackoff) pause = _options.UnavailableBackoff;
            await Task.Delay(pause, time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The owner side: runs a request another node forwarded on the local target and answers it (as "moved" when
    /// this node does not own the image now). Concurrent with every other request.
    /// </summary>
    public async Task<ForwardedReply> ServeForwardedAsync(ForwardedRequest request)
    {
        if (!TryEnter(out var target, out var life)) return ForwardedReply.Moved(_self, $"image {Name} is not served by {_self} now");
        try
        {
            byte[] data = [];
            IReadOnlyList<NbdExtent> extents = [];
            var none = CancellationToken.None;
            bool fua = request.Flags.HasFlag(ForwardedFlags.Fua);
            switch (request.Op)
            {
                case ForwardedOp.Read:
                    if (request.Length is < 0 or > MaxChunk) throw new ArgumentException($"a forwarded read of {request.Length} bytes is out of range");
                    data = new byte[request.Length];
                    await target.ReadAsync(request.Offset, data, none).ConfigureAwait(false);
                    break;
                case ForwardedOp.Write:
                    await target.WriteAsync(request.Offset, request.Data, fua, none).ConfigureAwait(false);
                    break;
                case ForwardedOp.WriteZeroes:
                    await target.WriteZeroesAsync(request.Offset, request.Length, request.Flags.HasFlag(ForwardedFlags.MayUnmap),
                        request.Flags.HasFlag(ForwardedFlags.FastZero), fua, none).ConfigureAwait(false);
                    break;
                case ForwardedOp.Trim:
                    await target.TrimAsync(request.Offset, request.Length, fua, none).ConfigureAwait(false);
                    break;
                case ForwardedOp.Flush:
                    await target.FlushAsync(none).ConfigureAwait(false);
                    break;
                case ForwardedOp.BlockStatus:
                    extents = await target.GetBlockStatusAsync(request.Offset, request.Length, none).ConfigureAwait(false);
                    break;
                default:
                    throw new ArgumentException($"unknown forwarded command {(byte)request.Op}");
            }
            return new ForwardedReply(ForwardedStatus.Ok, life, _self, 0, "", data, extents);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            return new ForwardedReply(ForwardedStatus.Failed, life, _self, (uint)ErrnoOf(ex), ex.Message, [], []);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>The errno a client sees for what an export threw (as the NBD server maps it).</summary>
    private static NbdError ErrnoOf(Exception ex) => ex switch
    {
        NbdException nbd => nbd.Error,
        IOException io when io.HResult is 28 or 122 or 27 => NbdError.NoSpace,
        IOException io when io.HResult == 30 => NbdError.NotPermitted,
        UnauthorizedAccessException => NbdError.NotPermitted,
        ArgumentException => NbdError.InvalidArgument,
        _ => NbdError.IoError,
    };
}

/// <summary>How long a proxy export keeps asking for an owner, and the clock it measures with.</summary>
internal sealed record ForwardingOptions
{
    /// <summary>A request that no owner answered in this long fails with EIO (the owner was not replaced).</summary>
    public TimeSpan Deadline { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>One attempt waits this long for an answer before it is sent again.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The pause before the second attempt; it doubles up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan FirstBackoff { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>The longest pause between attempts.</summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// The longest pause after an attempt that sent nothing because the owner's node was unreachable or had just left
    /// (<see cref="OwnerUnavailableException"/>): the next attempt only looks at the cluster state, then sends.
    /// </summary>
    public TimeSpan UnavailableBackoff { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The clock of timeouts, pauses and the deadline.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}
