using System.Runtime.ExceptionServices;
using Microsoft.Win32.SafeHandles;
using Polly;
using Polly.Retry;

namespace Qcow2Actors.Engine.Device;

/// <summary>Retry settings for <see cref="ResilientBlockDevice"/> (reads and opens only).</summary>
public sealed record ResilientDeviceOptions
{
    /// <summary>Retries after the first failed attempt; 0 turns retrying off.</summary>
    public int MaxRetryAttempts { get; init; } = 3;

    /// <summary>Delay before the first retry; later ones back off exponentially (with jitter).</summary>
    public TimeSpan BaseDelay { get; init; } = TimeSpan.FromMilliseconds(5);

    /// <summary>
    /// Which failures are worth another attempt. The default is
    /// <see cref="ResilientBlockDevice.IsTransient"/>.
    /// </summary>
    public Func<Exception, bool> IsTransient { get; init; } = ResilientBlockDevice.IsTransient;

    /// <summary>Called before each retry with the failure and the attempt number (0-based); for logging.</summary>
    public Action<Exception, int>? OnRetry { get; init; }

    /// <summary>The defaults: 3 retries starting at 5 ms.</summary>
    public static ResilientDeviceOptions Default { get; } = new();

    internal ResiliencePipeline BuildPipeline()
    {
        if (MaxRetryAttempts <= 0) return ResiliencePipeline.Empty;
        var isTransient = IsTransient;
        var onRetry = OnRetry;
        return new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(isTransient),
                MaxRetryAttempts = MaxRetryAttempts,
                Delay = BaseDelay,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = BaseDelay > TimeSpan.Zero,
                OnRetry = onRetry is null
                    ? null
                    : args =>
                    {
                        if (args.Outcome.Exception is { } e) onRetry(e, args.AttemptNumber);
                        return ValueTask.CompletedTask;
                    },
            })
            .Build();
    }
}

/// <summary>
/// Decorates an <see cref="IBlockDevice"/> so that reads that fail with a transient I/O error
/// are retried with a short exponential backoff (a Polly.Core retry pipeline). All of the retry
/// policy lives here: callers read through the device and never look behind it.
/// Writes, flushes and <see cref="SetLength"/> pass straight through and their
/// failures surface unchanged: a write may have partly landed, and after a failed fsync the
/// kernel may already have dropped the dirty pages, so a retry that "succeeds" would lie
/// about durability. The caller (the image) must turn read-only instead.
/// </summary>
/// <remarks>
/// The first attempt of a read goes straight to the inner device and only a failure enters the
/// pipeline (replaying that failure as the pipeline's first attempt, so the attempt count and the
/// <see cref="ResilientDeviceOptions.OnRetry"/> numbering are the pipeline's own): the pipeline costs
/// about a microsecond per call, as much as a cached 4 KiB read itself.
/// </remarks>
public sealed class ResilientBlockDevice : BlockDevice, INonBlockingRead, IAsyncHostRead, IFileRangeSource
{
    private readonly IBlockDevice _inner;
    private readonly ResiliencePipeline _pipeline;
    private readonly Func<Exception, bool> _isTransient;
    private readonly bool _retries;

    /// <summary>Wraps <paramref name="inner"/>; the wrapper owns it and disposes it.</summary>
    public ResilientBlockDevice(IBlockDevice inner, ResilientDeviceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        options ??= ResilientDeviceOptions.Default;
        _inner = inner;
        _pipeline = options.BuildPipeline();
        _isTransient = options.IsTransient;
        _retries = options.MaxRetryAttempts > 0;
    }

    /// <summary>The wrapped device.</summary>
    public IBlockDevice Inner => _inner;

    /// <inheritdoc />
    public override long Length => _inner.Length;

    /// <inheritdoc />
    public override bool IsReadOnly => _inner.IsReadOnly;

    /// <inheritdoc />
    public override string Name => _inner.Name;

    /// <summary>
    /// The default transient test: any <see cref="IOException"/> except those that say the
    /// path is wrong (not found, too long, no such drive) or that the data ended, which no
    /// amount of waiting fixes, or that another process holds the image, or that the filesystem refuses
    /// O_DIRECT (cache=none). EIO from a flaky disk or network filesystem, EAGAIN, ESTALE
    /// and sharing violations all arrive as plain <see cref="IOException"/>s.
    /// </summary>
    public static bool IsTransient(Exception exception) => exception is IOException
        and not FileNotFoundException
        and not DirectoryNotFoundException
        and not PathTooLongException
        and not DriveNotFoundException
        and not EndOfStreamException
        and not ImageLockException
        and not DirectIoRefusedException;

    /// <summary>
    /// Runs <paramref name="open"/> (for example <c>() =&gt; FileBlockDevice.Open(path, true)</c>)
    /// under the retry policy and wraps the device it returns.
    /// </summary>
    public static ResilientBlockDevice Open(Func<IBlockDevice> open, ResilientDeviceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(open);
        options ??= ResilientDeviceOptions.Default;
        var device = options.BuildPipeline().Execute(static o => o(), open);
        return new ResilientBlockDevice(device, options);
    }

    /// <summary>Opens a host file with retries on transient errors and returns it wrapped.</summary>
    public static ResilientBlockDevice OpenFile(string path, bool writable, ResilientDeviceOptions? options = null) =>
        Open(() => FileBlockDevice.Open(path, writable), options);

    /// <summary>
    /// Opens a host file with retries on transient errors, through the page cache
    /// (<see cref="CacheMode.Writeback"/>) or around it (<see cref="CacheMode.None"/>, O_DIRECT), and
    /// returns it wrapped.
    /// </summary>
    /// <exception cref="IOException">With <see cref="CacheMode.None"/>: the filesystem refuses O_DIRECT.</exception>
    public static ResilientBlockDevice OpenFile(string path, bool writable, CacheMode cache, ResilientDeviceOptions? options = null) =>
        cache == CacheMode.None
            ? Open(() => DirectFileBlockDevice.Open(path, writable), options)
            : OpenFile(path, writable, options);

    /// <inheritdoc />
    /// <remarks>Only a first attempt: a failure is the ordinary read's to retry.</remarks>
    bool INonBlockingRead.TryReadNow(Span<byte> buffer, long offset) =>
        _inner is INonBlockingRead now && now.TryReadNow(buffer, offset);

    /// <inheritdoc />
    /// <remarks>Only a first attempt: a failed read is reported as it is, and the caller's ordinary read retries it.</remarks>
    bool IAsyncHostRead.TryStartRead(byte[] buffer, int index, int count, long offset, IHostReadCompletion completion) =>
        _inner is IAsyncHostRead reader && reader.TryStartRead(buffer, index, count, offset, completion);

    /// <inheritdoc />
    /// <remarks>Only cached bytes are pinned, so the send that follows reads no disk and has nothing to retry.</remarks>
    SafeFileHandle? IFileRangeSource.TryPinCached(long offset, int count) =>
        _inner is IFileRangeSource source ? source.TryPinCached(offset, count) : null;

    /// <inheritdoc />
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        var first = _inner.ReadAsync(buffer, offset, cancellationToken);
        if (first.IsCompletedSuccessfully || !_retries) return first;
        return RetryAfterAsync(first, buffer, offset, cancellationToken);
    }

    private async ValueTask<int> RetryAfterAsync(ValueTask<int> first, Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ExceptionDispatchInfo failure;
        try
        {
            return await first.ConfigureAwait(false);
        }
        catch (Exception ex) when (_isTransient(ex))
        {
            failure = ExceptionDispatchInfo.Capture(ex);
        }
        var state = new RetryState(_inner, buffer, offset, failure);
        return await _pipeline.ExecuteAsync(static (s, ct) => s.AttemptAsync(ct), state, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken) =>
        _inner.WriteAsync(buffer, offset, cancellationToken);

    /// <inheritdoc />
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    /// <inheritdoc />
    public override void SetLength(long length) => _inner.SetLength(length);

    /// <inheritdoc />
    public override void PunchHole(long offset, long length) => _inner.PunchHole(offset, length);

    /// <inheritdoc />
    public override bool ReserveSpace(long offset, long length) => _inner.ReserveSpace(offset, length);

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) _inner.Dispose();
    }

    /// <summary>One read under the pipeline: its first attempt is the failure already seen, the later ones read again.</summary>
    private sealed class RetryState(IBlockDevice inner, Memory<byte> buffer, long offset, ExceptionDispatchInfo firstFailure)
    {
        private ExceptionDispatchInfo? _firstFailure = firstFailure;

        public ValueTask<int> AttemptAsync(CancellationToken cancellationToken)
        {
            if (Interlocked.Exchange(ref _firstFailure, null) is { } seen) seen.Throw();
            return inner.ReadAsync(buffer, offset, cancellationToken);
        }
    }
}
