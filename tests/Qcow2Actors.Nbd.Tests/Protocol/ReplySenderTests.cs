using System.Net;
using System.Net.Sockets;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// A connection whose client is gone: the reply sender's send fails part-way through its queue, and every reply
/// handed to it, sent, being sent, queued or arriving later, still gives its budget back (and its buffer to the
/// pool, in the same step), once; the connection is told it is broken, once.
/// </summary>
public sealed class ReplySenderTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Every_reply_gives_its_budget_back_once_when_the_peer_resets_mid_stream()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(listener.LocalEndpoint);
        using (var peer = await listener.AcceptSocketAsync())
        {
            // A reset, not a clean close: the sender's next send fails at once instead of filling a buffer nobody reads.
            peer.LingerState = new LingerOption(true, 0);
        }

        long released = 0, releases = 0, target = long.MaxValue;
        int brokenCalls = 0;
        var broken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var allReleased = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var abort = new CancellationTokenSource();
        using var sender = new ReplySender(socket, null,
            charge =>
            {
                Interlocked.Add(ref released, charge);
                if (Interlocked.Increment(ref releases) >= Interlocked.Read(ref target)) allReleased.TrySetResult();
            },
            () => { Interlocked.Increment(ref brokenCalls); broken.TrySetResult(); }, TimeProvider.System, abort.Token);

        // Large replies (a gather send each) and small ones (coalesced), sent until the reset reaches the sender;
        // bounded: a reset peer fails a send within a few round trips.
        long handed = 0;
        int sent = 0;
        for (; sent < 10_000 && !broken.Task.IsCompleted; sent++)
        {
            int length = sent % 3 == 0 ? 256 * 1024 : 16;
            sender.Send(new OutgoingReply(RequestBuffers.Rent(length), length, Charge: sent + 1));
            handed += sent + 1;
        }
        await broken.Task.WaitAsync(Timeout);
        Assert.True(sender.IsBroken);

        // Replies after the failure are dropped, and still give their budget back.
        for (int i = 0; i < 5; i++, sent++)
        {
            sender.Send(new OutgoingReply(RequestBuffers.Rent(16), 16, Charge: sent + 1));
            handed += sent + 1;
        }
        // The drain that failed finishes its batch after telling the connection: wait for the last release.
        Interlocked.Exchange(ref target, sent);
        if (Interlocked.Read(ref releases) >= sent) allReleased.TrySetResult();
        await allReleased.Task.WaitAsync(Timeout);
        Assert.Equal(sent, Interlocked.Read(ref releases));
        Assert.Equal(handed, Interlocked.Read(ref released));
        Assert.Equal(1, brokenCalls);
    }
}
