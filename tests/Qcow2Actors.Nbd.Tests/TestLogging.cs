using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>Collects warnings and errors a server logs, formatted, for tests to count.</summary>
internal sealed class CollectingLoggerFactory : ILoggerFactory, ILogger
{
    public ConcurrentQueue<string> Warnings { get; } = new();

    public ILogger CreateLogger(string categoryName) => this;
    public void AddProvider(ILoggerProvider provider) { }
    public void Dispose() { }
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel)) Warnings.Enqueue(formatter(state, exception));
    }
}

/// <summary>A <see cref="FakeTimeProvider"/> that tells the test every timer the code under test arms, with its due time.</summary>
internal sealed class ArmedTimerProvider : FakeTimeProvider
{
    public Channel<TimeSpan> Armed { get; } = Channel.CreateUnbounded<TimeSpan>();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new Recording(base.CreateTimer(callback, state, dueTime, period), this);
        if (dueTime != Timeout.InfiniteTimeSpan) Armed.Writer.TryWrite(dueTime);
        return timer;
    }

    /// <summary>The next armed due time; the wait is only a guard against a hang.</summary>
    public async Task<TimeSpan> NextArmedAsync() => await Armed.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));

    private sealed class Recording(ITimer inner, ArmedTimerProvider owner) : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            if (dueTime != Timeout.InfiniteTimeSpan) owner.Armed.Writer.TryWrite(dueTime);
            return inner.Change(dueTime, period);
        }

        public void Dispose() => inner.Dispose();
        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
