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
/// are retried with a short exponential backoff (a Polly.Core retry pipeline).
/// Writes, <see cref="Flush"/> and <see cref="SetLength"/> pass straight through and their
/// failures surface unchanged: a write may have partly landed, and after a failed fsync the
/// kernel may already have dropped the dirty pages, so a retry that "succeeds" would lie
/// about durability. The caller (the image) must turn read-only instead.
/// </summary>
public sealed class ResilientBlockDevice : IBlockDevice
{
    private readonly IBlockDevice _inner;
    private readonly ResiliencePipeline _pipeline;

    /// <summary>Wraps <paramref name="inner"/>; the wrapper owns it and disposes it.</summary>
    public ResilientBlockDevice(IBlockDevice inner, ResilientDeviceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
        _pipeline = (options ?? ResilientDeviceOptions.Default).BuildPipeline();
    }

    /// <summary>The wrapped device.</summary>
    public IBlockDevice Inner => _inner;

    /// <inheritdoc />
    public long Length => _inner.Length;

    /// <inheritdoc />
    public bool IsReadOnly => _inner.IsReadOnly;

    /// <inheritdoc />
    public string Name => _inner.Name;

    /// <summary>
    /// The default transient test: any <see cref="IOException"/> except those that say the
    /// path is wrong (not found, too long, no such drive) or that the data ended, which no
    /// amount of waiting fixes, or that another process holds the image. EIO from a flaky disk or network filesystem, EAGAIN, ESTALE
    /// and sharing violations all arrive as plain <see cref="IOException"/>s.
    /// </summary>
    public static bool IsTransient(Exception exception) => exception is IOException
        and not FileNotFoundException
        and not DirectoryNotFoundException
        and not PathTooLongException
        and not DriveNotFoundException
        and not EndOfStreamException
        and not ImageLockException;

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

    /// <inheritdoc />
    public unsafe int Read(Span<byte> buffer, long offset)
    {
        // Polly's callbacks are ordinary delegates and cannot capture a Span, so the span
        // is pinned and passed as pointer + length; Execute is synchronous, so the pin
        // outlives every attempt.
        fixed (byte* p = buffer)
        {
            return _pipeline.Execute(
                static s => s.Inner.Read(new Span<byte>((void*)s.Pointer, s.Length), s.Offset),
                new ReadState(_inner, (nint)p, buffer.Length, offset));
        }
    }

    /// <inheritdoc />
    public ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default) =>
        _pipeline.ExecuteAsync(
            static (s, ct) => s.Inner.ReadAsync(s.Buffer, s.Offset, ct),
            (Inner: _inner, Buffer: buffer, Offset: offset),
            cancellationToken);

    /// <inheritdoc />
    public void Write(ReadOnlySpan<byte> buffer, long offset) => _inner.Write(buffer, offset);

    /// <inheritdoc />
    public ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default) =>
        _inner.WriteAsync(buffer, offset, cancellationToken);

    /// <inheritdoc />
    public void Flush() => _inner.Flush();

    /// <inheritdoc />
    public void SetLength(long length) => _inner.SetLength(length);

    /// <inheritdoc />
    public void PunchHole(long offset, long length) => _inner.PunchHole(offset, length);

    /// <inheritdoc />
    public bool ReserveSpace(long offset, long length) => _inner.ReserveSpace(offset, length);

    /// <inheritdoc />
    public void Dispose() => _inner.Dispose();

    private readonly record struct ReadState(IBlockDevice Inner, nint Pointer, int Length, long Offset);
}
