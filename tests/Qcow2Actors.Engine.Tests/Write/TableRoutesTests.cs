using Akka.TestKit.Xunit2;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Engine.Write;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Callers send straight to a live table actor only while the image actor keeps its route open; closing a route
/// waits out the callers on it, and what callers sent is handed back to the image actor's bookkeeping.
/// </summary>
public sealed class TableRoutesTests : TestKit
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    [Fact]
    public void A_caller_sends_directly_only_on_an_open_route()
    {
        var routes = new TableRoutes(new FakeTimeProvider());
        var table = CreateTestProbe();
        Assert.False(routes.TryTell(3, "before"));

        routes.Open(3, table.Ref);
        Assert.True(routes.TryTell(3, "open"));
        Assert.False(routes.TryTell(2, "other table"));
        Assert.False(routes.TryTell(1000, "past the end"));
        table.ExpectMsg("open", Timeout);

        routes.Close(3);
        Assert.False(routes.TryTell(3, "closed"));
        var next = CreateTestProbe();
        routes.Open(3, next.Ref);
        Assert.True(routes.TryTell(3, "reopened"));
        next.ExpectMsg("reopened", Timeout);
        table.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public async Task Close_returns_only_after_every_message_sent_on_the_route_is_in_the_mailbox()
    {
        var routes = new TableRoutes(new FakeTimeProvider());
        var table = CreateTestProbe();
        routes.Open(0, table.Ref);
        using var stop = new CancellationTokenSource();
        long sent = 0;
        var senders = Enumerable.Range(0, 2).Select(_ => Task.Factory.StartNew(() =>
        {
            while (!stop.IsCancellationRequested && routes.TryTell(0, "w")) Interlocked.Increment(ref sent);
        }, TaskCreationOptions.LongRunning)).ToArray();
        SpinWait.SpinUntil(() => Interlocked.Read(ref sent) > 1000, Timeout);

        routes.Close(0);
        // The marker is told after Close: every "w" that TryTell reported sent must be ahead of it.
        table.Ref.Tell("closed", Akka.Actor.ActorRefs.NoSender);
        await Task.WhenAll(senders).WaitAsync(Timeout);
        long received = 0;
        while (table.ReceiveOne(Timeout) is "w") received++;
        Assert.Equal(Interlocked.Read(ref sent), received);
        Assert.True(received > 1000);
    }

    [Fact]
    public void A_route_closes_for_its_own_actor_only_and_a_newer_actor_replaces_it()
    {
        var routes = new TableRoutes(new FakeTimeProvider());
        var old = CreateTestProbe();
        var newer = CreateTestProbe();
        routes.Open(4, old.Ref);
        routes.Open(4, newer.Ref);
        routes.Close(4, old.Ref); // the old actor's late Terminated: the newer route stays
        Assert.True(routes.TryTell(4, "to the newer"));
        newer.ExpectMsg("to the newer", Timeout);
        old.ExpectNoMsg(TimeSpan.Zero);

        routes.Close(4, newer.Ref);
        Assert.False(routes.TryTell(4, "closed"));
    }

    /// <summary>A table whose mailbox takes each message only when the test lets it: a caller stays inside its send until then.</summary>
    private sealed class SlowMailbox(Akka.Actor.ActorPath path) : Akka.Actor.MinimalActorRef
    {
        public readonly ManualResetEventSlim Open = new(false);
        public readonly SemaphoreSlim Entered = new(0);
        public int Delivered;
        public override Akka.Actor.ActorPath Path => path;
        public override Akka.Actor.IActorRefProvider Provider => throw new NotSupportedException();

        protected override void TellInternal(object message, Akka.Actor.IActorRef sender)
        {
            Entered.Release();
            Open.Wait(TimeSpan.FromMinutes(1));
            Interlocked.Increment(ref Delivered);
        }
    }

    [Fact]
    public async Task Close_waits_for_a_caller_still_inside_its_send()
    {
        var routes = new TableRoutes(new FakeTimeProvider());
        var table = new SlowMailbox(new Akka.Actor.RootActorPath(Akka.Actor.Address.AllSystems) / "slow");
        routes.Open(0, table);
        var send = Task.Factory.StartNew(() => routes.TryTell(0, "w"), TaskCreationOptions.LongRunning);
        Assert.True(await table.Entered.WaitAsync(Timeout));

        var close = Task.Factory.StartNew(() => routes.Close(0), TaskCreationOptions.LongRunning);
        // Negative by nature: a Close that returned here would have let StopIfClean overtake the message.
        Assert.False(SpinWait.SpinUntil(() => close.IsCompleted, TimeSpan.FromMilliseconds(200)), "Close returned while a send on the route was under way");
        Assert.False(routes.TryTell(0, "after close started"));

        table.Open.Set();
        Assert.True(await send.WaitAsync(Timeout));
        await close.WaitAsync(Timeout);
        Assert.Equal(1, table.Delivered);
    }

    [Fact]
    public void Harvest_lists_the_tables_used_since_the_last_harvest_oldest_use_first()
    {
        var time = new FakeTimeProvider();
        var routes = new TableRoutes(time);
        routes.Open(1, CreateTestProbe().Ref);
        routes.Open(5, CreateTestProbe().Ref);
        routes.Open(9, CreateTestProbe().Ref);
        Assert.Empty(routes.Harvest());

        routes.TryTell(5, "a");
        time.Advance(TimeSpan.FromSeconds(1));
        routes.TryTell(1, "b");
        time.Advance(TimeSpan.FromSeconds(1));
        routes.TryTell(5, "c");

        var used = routes.Harvest();
        Assert.Equal(new[] { 1, 5 }, used.Select(u => u.Index));
        Assert.Equal(time.GetTimestamp(), used[1].LastUseAt);
        Assert.True(used[0].LastUseAt < used[1].LastUseAt);
        Assert.Empty(routes.Harvest());
    }
}
