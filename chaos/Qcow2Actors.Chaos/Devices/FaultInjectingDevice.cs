using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.Devices;

/// <summary>
/// Decorates an <see cref="IBlockDevice"/> with injected failures and latency, chosen by
/// <see cref="FaultRule"/>s: the Nth read/write/flush, every operation on a byte range, a
/// random fraction, or a slow disk. Failures are <see cref="ChaosIOException"/>s whose HResult is
/// the errno (EIO, ENOSPC, ...). A failed flush is sticky by default, as the engine must treat it.
/// </summary>
public sealed class FaultInjectingDevice : BlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly FaultInjectionOptions _options;
    private readonly Lock _gate = new();
    private readonly List<RuleState> _rules = [];
    private readonly Random _random;
    private int? _flushFailure;
    private long _injected;

    /// <summary>Wraps <paramref name="inner"/> (and disposes it) with <paramref name="rules"/>.</summary>
    public FaultInjectingDevice(IBlockDevice inner, FaultInjectionOptions? options = null, params IEnumerable<FaultRule> rules)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
        _options = options ?? new FaultInjectionOptions();
        _random = new Random(_options.Seed);
        foreach (var rule in rules) AddRule(rule);
    }

    /// <summary>The wrapped device.</summary>
    public IBlockDevice Inner => _inner;

    /// <inheritdoc />
    public override long Length => _inner.Length;

    /// <inheritdoc />
    public override bool IsReadOnly => _inner.IsReadOnly;

    /// <inheritdoc />
    public override string Name => _inner.Name;

    /// <summary>How many operations have failed on purpose so far.</summary>
    public long InjectedFailures => Interlocked.Read(ref _injected);

    /// <summary>The errno of the flush failure that poisoned the device, or null while flushes work.</summary>
    public int? FlushFailure
    {
        get { lock (_gate) return _flushFailure; }
    }

    /// <summary>Adds a rule; it starts counting matches from now.</summary>
    public void AddRule(FaultRule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentOutOfRangeException.ThrowIfLessThan(rule.FirstMatch, 1);
        lock (_gate) _rules.Add(new RuleState(rule));
    }

    /// <summary>Removes every rule (a sticky flush failure stays: the disk does not heal).</summary>
    public void ClearRules()
    {
        lock (_gate) _rules.Clear();
    }

    /// <inheritdoc />
    protected override async ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        var fault = Decide(FaultOperations.Read, offset, buffer.Length);
        await fault.DelayAndThrowBeforeAsync(this, "read", cancellationToken);
        var n = await _inner.ReadAsync(buffer, offset, cancellationToken);
        fault.ThrowAfter(this, "read");
        return n;
    }

    /// <inheritdoc />
    protected override async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        var fault = Decide(FaultOperations.Write, offset, buffer.Length);
        await fault.DelayAndThrowBeforeAsync(this, "write", cancellationToken);
        await _inner.WriteAsync(buffer, offset, cancellationToken);
        fault.ThrowAfter(this, "write");
    }

    /// <inheritdoc />
    protected override async ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        var fault = Decide(FaultOperations.Flush, 0, 0);
        if (fault.Delay > TimeSpan.Zero) await Task.Delay(fault.Delay, cancellationToken);
        if (fault.Errno is { } errno && !fault.After)
        {
            PoisonFlush(errno, dataReachedDisk: false);
            throw new ChaosIOException(Name, "flush", errno);
        }
        try
        {
            await _inner.FlushAsync(cancellationToken);
        }
        catch (IOException e)
        {
            // A real fdatasync failure below us poisons the device just like an injected one.
            PoisonFlush(e.HResult, dataReachedDisk: false);
            throw;
        }
        if (fault.Errno is { } after)
        {
            PoisonFlush(after, dataReachedDisk: true);
            throw new ChaosIOException(Name, "flush", after);
        }
    }

    /// <inheritdoc />
    public override void SetLength(long length)
    {
        var fault = Decide(FaultOperations.SetLength, 0, 0);
        fault.SleepAndThrowBefore(this, "set length");
        _inner.SetLength(length);
        fault.ThrowAfter(this, "set length");
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) _inner.Dispose();
    }

    private void PoisonFlush(int errno, bool dataReachedDisk)
    {
        lock (_gate) _flushFailure ??= errno;
        if (!dataReachedDisk && _options.LoseUnsyncedWritesOnFlushFailure && _inner is CrashSimulatingDevice crash)
            crash.LoseUnsyncedWrites();
    }

    private Fault Decide(FaultOperations operation, long offset, long length)
    {
        lock (_gate)
        {
            if (_flushFailure is { } poisoned)
            {
                if (operation == FaultOperations.Flush && _options.StickyFlushFailure)
                    return Count(new Fault(TimeSpan.Zero, poisoned, false, "a previous flush failed"));
                if (operation is FaultOperations.Write or FaultOperations.SetLength && _options.FailWritesAfterFlushFailure)
                    return Count(new Fault(TimeSpan.Zero, poisoned, false, "a previous flush failed"));
            }

            var delay = TimeSpan.Zero;
            int? errno = null;
            var after = false;
            foreach (var state in _rules)
            {
                var rule = state.Rule;
                if ((rule.Operations & operation) == 0) continue;
                if (rule.HasRange)
                {
                    if (operation is FaultOperations.Flush or FaultOperations.SetLength) continue;
                    if (offset + Math.Max(length, 1) <= rule.RangeStart || offset >= rule.RangeEnd) continue;
                }
                var match = ++state.Matches;
                if (match < rule.FirstMatch) continue;
                if (rule.HitCount is { } hits && match >= rule.FirstMatch + hits) continue;
                if (rule.Probability < 1.0 && _random.NextDouble() >= rule.Probability) continue;
                delay += rule.Delay;
                if (errno is null && rule.Errno is { } e)
                {
                    errno = e;
                    after = rule.FailAfterInner;
                }
            }
            var fault = new Fault(delay, errno, after, null);
            return errno is null ? fault : Count(fault);
        }
    }

    private Fault Count(Fault fault)
    {
        Interlocked.Increment(ref _injected);
        return fault;
    }

    private sealed class RuleState(FaultRule rule)
    {
        public FaultRule Rule { get; } = rule;

        public long Matches { get; set; }
    }

    private readonly record struct Fault(TimeSpan Delay, int? Errno, bool After, string? Reason)
    {
        public void SleepAndThrowBefore(FaultInjectingDevice device, string operation)
        {
            if (Delay > TimeSpan.Zero) Thread.Sleep(Delay);
            if (Errno is { } e && !After) throw new ChaosIOException(device.Name, operation, e, Reason);
        }

        public async ValueTask DelayAndThrowBeforeAsync(FaultInjectingDevice device, string operation, CancellationToken cancellationToken)
        {
            if (Delay > TimeSpan.Zero) await Task.Delay(Delay, cancellationToken);
            if (Errno is { } e && !After) throw new ChaosIOException(device.Name, operation, e, Reason);
        }

        public void ThrowAfter(FaultInjectingDevice device, string operation)
        {
            if (Errno is { } e && After) throw new ChaosIOException(device.Name, operation, e, Reason ?? "injected after the operation reached the device");
        }
    }
}
