using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Nbd.Throttling;

namespace Qcow2Actors.Nbd.Tests.Throttling;

/// <summary>
/// Clients that keep one request each outstanding against throttled exports, on simulated time:
/// <see cref="AdvanceAsync"/> moves the clock in small steps and, after each, waits until every
/// client is back waiting in a group, so what the groups admitted is counted before time moves on.
/// </summary>
internal sealed class SimulatedClients : IAsyncDisposable
{
    private readonly FakeTimeProvider _time;
    private readonly ThrottleGroup[] _groups;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _loops = [];
    private readonly List<long[]> _counts = [];

    public SimulatedClients(FakeTimeProvider time, params ThrottleGroup[] groups)
    {
        _time = time;
        _groups = groups;
    }

    /// <summary>Starts a client looping reads (or writes) of <paramref name="size"/> bytes; returns its index.</summary>
    public int Start(INbdExport export, bool write = false, int size = 4096)
    {
        var count = new long[1];
        _counts.Add(count);
        _loops.Add(Task.Run(async () =>
        {
            var buffer = new byte[size];
            try
            {
                while (!_stop.IsCancellationRequested)
                {
                    if (write) await export.WriteAsync(0, buffer, false, _stop.Token);
                    else await export.ReadAsync(0, buffer, _stop.Token);
                    Interlocked.Increment(ref count[0]);
                }
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
            }
        }));
        return _counts.Count - 1;
    }

    /// <summary>Requests client <paramref name="index"/> has had admitted so far.</summary>
    public long Count(int index) => Interlocked.Read(ref _counts[index][0]);

    /// <summary>Sum of <see cref="Count"/> over the clients given.</summary>
    public long Count(params int[] indexes) => indexes.Sum(Count);

    /// <summary>Moves simulated time forward by <paramref name="span"/> in <paramref name="step"/>s (1 ms by default).</summary>
    public async Task AdvanceAsync(TimeSpan span, TimeSpan? step = null)
    {
        var by = step ?? TimeSpan.FromMilliseconds(1);
        await SettleAsync();
        for (var done = TimeSpan.Zero; done < span; done += by)
        {
            _time.Advance(by);
            await SettleAsync();
        }
    }

    /// <summary>Waits until every client is waiting in one of the groups (the real-time bound only guards against a hang).</summary>
    public async Task SettleAsync()
    {
        var guard = Stopwatch.StartNew();
        while (_groups.Sum(g => g.QueuedRequests) != _loops.Count)
        {
            if (_loops.FirstOrDefault(t => t.IsFaulted) is { } failed) await failed;
            if (guard.Elapsed > TimeSpan.FromSeconds(10))
                Assert.Fail($"only {_groups.Sum(g => g.QueuedRequests)} of {_loops.Count} clients came back to wait in their groups");
            await Task.Yield();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_loops);
        _stop.Dispose();
    }
}
