using System.Reflection;
using Qcow2Actors.Nbd.Client;

namespace Qcow2Actors.Nbd.Tests.Client;

/// <summary>
/// Disposing an <see cref="NbdClient"/> while other requests hold or wait on its write gate: nothing goes on the wire
/// after the disconnect, and every such request ends with the one-line close reason. The test holds the gate itself
/// (as a request stuck in a write would) so the interleaving is exact.
/// </summary>
public sealed class NbdClientDisposalTests
{
    private static SemaphoreSlim WriteGate(NbdClient client) =>
        (SemaphoreSlim)typeof(NbdClient).GetField("_writeGate", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(client)!;

    private static string Disconnected(OldServer server) => $"nbd server 127.0.0.1:{server.Port} export 'old': the client disconnected";

    [Fact]
    public async Task A_request_queued_on_the_gate_when_disposal_begins_fails_with_the_close_reason_and_never_reaches_the_server()
    {
        await using var server = new OldServer(new byte[64 * 1024]);
        var client = await NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = server.Port, ExportName = "old" });
        var gate = WriteGate(client);
        await gate.WaitAsync();
        var queued = client.ReadAsync(0, new byte[512]).AsTask(); // waits on the gate the test holds
        var disposing = client.DisposeAsync().AsTask(); // marks the client disposed, then queues behind the read
        gate.Release();

        var ex = await Assert.ThrowsAnyAsync<IOException>(() => queued);
        Assert.Equal(Disconnected(server), ex.Message);
        await disposing;
        await server.Served; // ended by our NBD_CMD_DISC
        Assert.Equal([(ushort)2], server.Commands); // the DISC alone: the queued read never went out
    }

    [Fact]
    public async Task The_synchronous_disconnect_neither_waits_for_nor_breaks_a_request_holding_the_gate()
    {
        await using var server = new OldServer(new byte[64 * 1024]);
        var client = await NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = server.Port, ExportName = "old" });
        var gate = WriteGate(client);
        await gate.WaitAsync();
        var queued = client.ReadAsync(0, new byte[512]).AsTask();

        new NbdBlockDevice(client, "nbd://old").Dispose(); // returns while the gate is still held
        Assert.Equal(0, gate.CurrentCount);
        gate.Release(); // the holder's release must not meet a disposed semaphore

        var ex = await Assert.ThrowsAnyAsync<IOException>(() => queued);
        Assert.Equal(Disconnected(server), ex.Message);
        await server.Served; // the closed socket ends the session
        Assert.Empty(server.Commands);
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await client.ReadAsync(0, new byte[1]));
    }
}
