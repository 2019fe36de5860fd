namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// The door of an open image's requests: an edit that closes it waits for the requests inside,
/// requests that arrive meanwhile wait (never fail), and edits take turns.
/// </summary>
public sealed class RequestGateTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Closing_waits_for_the_requests_inside_and_holds_new_ones_until_it_opens()
    {
        var gate = new RequestGate();
        var inside = await gate.EnterAsync(default);
        var closing = gate.CloseAsync(default);
        Assert.False(closing.IsCompleted);
        Assert.True(gate.IsClosed);

        var waiting = gate.EnterAsync(default).AsTask();
        Assert.False(gate.TryEnter());
        Assert.False(waiting.IsCompleted);

        inside.Dispose();
        using (await closing.WaitAsync(Timeout))
        {
            Assert.Equal(0, gate.Inside);
            Assert.False(waiting.IsCompleted);
        }
        using (await waiting.WaitAsync(Timeout))
            Assert.Equal(1, gate.Inside);
        Assert.Equal(0, gate.Inside);
        Assert.False(gate.IsClosed);
    }

    [Fact]
    public async Task Closed_completes_when_a_closer_closes_the_door_and_waits_again_once_it_opens()
    {
        var gate = new RequestGate();
        var before = gate.Closed;
        Assert.False(before.IsCompleted);

        var closure = await gate.CloseAsync(default).WaitAsync(Timeout);
        await before.WaitAsync(Timeout);
        Assert.True(gate.Closed.IsCompleted, "while closed, at once");

        closure.Dispose();
        Assert.False(gate.Closed.IsCompleted, "open again: the next close");
    }

    [Fact]
    public async Task Closers_take_turns()
    {
        var gate = new RequestGate();
        var first = await gate.CloseAsync(default);
        var second = gate.CloseAsync(default);
        Assert.False(second.IsCompleted);
        first.Dispose();
        using (await second.WaitAsync(Timeout))
            Assert.True(gate.IsClosed);
        Assert.False(gate.IsClosed);
        Assert.True(gate.TryEnter());
        gate.Exit();
    }

    [Fact]
    public async Task A_cancelled_close_opens_the_door_again_and_keeps_the_turn_order()
    {
        var gate = new RequestGate();
        var inside = await gate.EnterAsync(default);
        using var cancel = new CancellationTokenSource();
        var closing = gate.CloseAsync(cancel.Token);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => closing);
        Assert.False(gate.IsClosed);
        inside.Dispose();
        using (await gate.CloseAsync(default).WaitAsync(Timeout))
            Assert.Equal(0, gate.Inside);
    }

    [Fact]
    public async Task Many_requests_racing_one_close_are_all_either_drained_or_held()
    {
        var gate = new RequestGate();
        int insideDuringEdit = 0, done = 0;
        bool editing = false;
        var requests = Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            for (int i = 0; i < 2000; i++)
            {
                using (await gate.EnterAsync(default))
                {
                    if (Volatile.Read(ref editing)) Interlocked.Increment(ref insideDuringEdit);
                }
            }
            Interlocked.Increment(ref done);
        })).ToList();
        for (int edits = 0; edits < 50 && Volatile.Read(ref done) < requests.Count; edits++)
        {
            using (await gate.CloseAsync(default).WaitAsync(Timeout))
            {
                // Requests bounce off the closed door (TryEnter steps back out), so only an admitted one counts.
                Volatile.Write(ref editing, true);
                await Task.Yield();
                Volatile.Write(ref editing, false);
            }
        }
        await Task.WhenAll(requests).WaitAsync(Timeout);
        Assert.Equal(0, insideDuringEdit);
        Assert.Equal(0, gate.Inside);
    }
}
