using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// The receive loop when its reader stops reading (the handshake busy with STARTTLS): a pause or an abort must not
/// wait on a flush that a full pipe holds, and a pause loses no byte the pipe already took.
/// </summary>
public sealed class SocketReceiverTests
{
    private const int PipeFull = 512 * 1024; // the receiver's pause threshold
    private const int Sent = 2 * 1024 * 1024;
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(10); // only a guard against the hang under test

    private static async Task<(Socket Server, Socket Client)> PairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        return (await listener.AcceptAsync(), client);
    }

    /// <summary>Waits, consuming nothing, until the pipe holds at least its pause threshold: the loop's flush is then held.</summary>
    private static async Task<long> WaitForFullPipeAsync(PipeReader reader)
    {
        while (true)
        {
            var result = await reader.ReadAsync().AsTask().WaitAsync(Guard);
            var length = result.Buffer.Length;
            if (length >= PipeFull)
            {
                reader.AdvanceTo(result.Buffer.Start); // as the handshake leaves it: unexamined, so TryRead sees it again
                return length;
            }
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            Assert.False(result.IsCompleted, "the peer's bytes ended before the pipe filled");
        }
    }

    [Fact]
    public async Task A_pause_releases_a_flush_held_by_a_full_pipe_and_loses_no_byte()
    {
        var (server, client) = await PairAsync();
        using var ownedServer = server;
        using var ownedClient = client;
        var receiver = new SocketReceiver(server);
        receiver.Start(pausable: true);
        var data = TestServers.RandomBytes(Sent, seed: 11);
        var sending = client.SendAsync(data, SocketFlags.None); // completes once the kernel took it all, below

        await WaitForFullPipeAsync(receiver.Reader);
        await receiver.PauseAsync(CancellationToken.None).WaitAsync(Guard);

        // What the pipe took, then the rest straight from the socket, is exactly what was sent.
        Assert.True(receiver.Reader.TryRead(out var held));
        var got = held.Buffer.ToArray();
        receiver.Reader.AdvanceTo(held.Buffer.End);
        var rest = new byte[Sent - got.Length];
        for (var n = 0; n < rest.Length;)
        {
            var received = await server.ReceiveAsync(rest.AsMemory(n), SocketFlags.None).AsTask().WaitAsync(Guard);
            Assert.NotEqual(0, received);
            n += received;
        }
        await sending.WaitAsync(Guard);
        Assert.Equal(data, got.Concat(rest).ToArray());
    }

    [Fact]
    public async Task An_abort_releases_a_flush_held_by_a_full_pipe()
    {
        var (server, client) = await PairAsync();
        using var peer = client;
        var receiver = new SocketReceiver(server);
        receiver.Start(pausable: false);
        _ = peer.SendAsync(new byte[Sent], SocketFlags.None); // never finishes whole: the receiver is cut off

        await WaitForFullPipeAsync(receiver.Reader);
        server.Dispose();
        receiver.Abort();
        await receiver.Completion.WaitAsync(Guard);
    }
}
