using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Nbd.Protocol;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// A small reply waits for the replies of its connection's other running requests and leaves with them: never with
/// one request in flight, never behind a FLUSH or a FUA write, never more than <see cref="ReplyHold.Limit"/> at once,
/// never longer than <see cref="ReplyHold.Bound"/>. "Not yet sent" is read off the client's socket right after
/// the hand-over: on loopback a send that happened has already put its bytes there.
/// </summary>
public sealed class ReplyHoldTests : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private const int ReplyLength = 16;

    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly FakeTimeProvider _time = new();
    private Socket _server = null!;
    private Socket _client = null!;
    private ReplySender _sender = null!;
    private ulong _nextHandle;

    private async Task StartAsync()
    {
        _listener.Start();
        _server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await _server.ConnectAsync(_listener.LocalEndpoint);
        _client = await _listener.AcceptSocketAsync();
        _sender = new ReplySender(_server, null, _ => { }, () => { }, _time, CancellationToken.None);
    }

    private NbdRequest Start(ushort type, ushort flags = 0)
    {
        var request = new NbdRequest(flags, type, ++_nextHandle, 0, 4096);
        _sender.Started(request);
        return request;
    }

    private void Reply(in NbdRequest request, int length = ReplyLength)
    {
        var buffer = RequestBuffers.Rent(length);
        buffer.AsSpan(0, length).Fill((byte)request.Handle);
        _sender.Send(new OutgoingReply(buffer, length, Charge: 0), request);
    }

    /// <summary>Bytes that reached the client so far, without waiting.</summary>
    private int Arrived => _client.Available;

    /// <summary>Reads exactly <paramref name="count"/> bytes and returns the handles' fill bytes in order, one per reply.</summary>
    private async Task<byte[]> ReceiveAsync(int count) =>
        (await ReceiveBytesAsync(count)).Where((_, i) => i % ReplyLength == 0).ToArray();

    /// <summary>Reads exactly <paramref name="count"/> bytes.</summary>
    private async Task<byte[]> ReceiveBytesAsync(int count)
    {
        var got = new byte[count];
        int at = 0;
        using var cts = new CancellationTokenSource(Timeout);
        while (at < count)
        {
            int n = await _client.ReceiveAsync(got.AsMemory(at), SocketFlags.None, cts.Token);
            Assert.True(n > 0, "the sender closed the connection");
            at += n;
        }
        return got;
    }

    [Fact]
    public async Task A_reply_with_nothing_else_running_goes_at_once()
    {
        await StartAsync();
        var write = Start(CmdWrite);
        Reply(write);
        Assert.Equal([(byte)write.Handle], await ReceiveAsync(ReplyLength));
    }

    [Fact]
    public async Task A_reply_waits_for_the_other_running_request_and_leaves_with_it_in_order()
    {
        await StartAsync();
        var first = Start(CmdWrite);
        var second = Start(CmdRead);
        Reply(first);
        Assert.Equal(0, Arrived);
        Reply(second);
        Assert.Equal([(byte)first.Handle, (byte)second.Handle], await ReceiveAsync(2 * ReplyLength));
    }

    [Fact]
    public async Task At_most_the_limit_wait_and_the_next_reply_takes_them_all()
    {
        await StartAsync();
        var requests = Enumerable.Range(0, ReplyHold.Limit + 2).Select(_ => Start(CmdWrite)).ToList();
        for (int i = 0; i < ReplyHold.Limit - 1; i++) Reply(requests[i]);
        Assert.Equal(0, Arrived);
        Reply(requests[ReplyHold.Limit - 1]);
        var handles = await ReceiveAsync(ReplyHold.Limit * ReplyLength);
        Assert.Equal(requests.Take(ReplyHold.Limit).Select(r => (byte)r.Handle), handles);
    }

    [Fact]
    public async Task A_running_flush_or_fua_write_holds_no_reply()
    {
        await StartAsync();
        Start(CmdFlush);
        Start(CmdWrite, CmdFlagFua);
        var write = Start(CmdWrite);
        Reply(write);
        Assert.Equal([(byte)write.Handle], await ReceiveAsync(ReplyLength));
    }

    [Fact]
    public async Task A_reply_held_behind_a_slow_request_goes_when_the_bound_runs_out()
    {
        await StartAsync();
        Start(CmdWrite); // never answers
        var quick = Start(CmdWrite);
        Reply(quick);
        _time.Advance(ReplyHold.Bound - TimeSpan.FromTicks(1));
        Assert.Equal(0, Arrived);
        _time.Advance(TimeSpan.FromTicks(1));
        Assert.Equal([(byte)quick.Handle], await ReceiveAsync(ReplyLength));
    }

    [Fact]
    public async Task The_reader_about_to_wait_sends_what_is_held()
    {
        await StartAsync();
        Start(CmdWrite);
        var quick = Start(CmdWrite);
        Reply(quick);
        Assert.Equal(0, Arrived);
        _sender.SendHeld();
        Assert.Equal([(byte)quick.Handle], await ReceiveAsync(ReplyLength));
    }

    [Fact]
    public async Task A_large_reply_goes_at_once_and_takes_the_held_ones_with_it()
    {
        await StartAsync();
        Start(CmdWrite);
        var small = Start(CmdWrite);
        var large = Start(CmdRead);
        Reply(small);
        Assert.Equal(0, Arrived);
        Reply(large, 64 * 1024);
        var got = await ReceiveBytesAsync(ReplyLength + 64 * 1024);
        Assert.Equal((byte)small.Handle, got[0]);
        Assert.Equal((byte)large.Handle, got[ReplyLength]);
    }

    public async ValueTask DisposeAsync()
    {
        _sender?.Dispose();
        _server?.Dispose();
        _client?.Dispose();
        _listener.Stop();
        _listener.Dispose();
        await Task.CompletedTask;
    }
}
