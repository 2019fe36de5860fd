using System.Net;
using System.Net.Sockets;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Nbd.Client;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;
using ClientExtent = Qcow2Actors.Nbd.Client.NbdExtent;

namespace Qcow2Actors.Nbd.Tests.Client;

/// <summary><see cref="NbdClient"/> and <see cref="NbdBlockDevice"/> against our own <see cref="NbdServer"/>, in process.</summary>
public sealed class NbdClientTests : IDisposable
{
    private const int KiB = 1024;
    private const int MiB = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static NbdClientOptions Tcp(NbdServer server, string export = "disk") =>
        new() { Host = "127.0.0.1", Port = ((IPEndPoint)server.LocalEndPoint!).Port, ExportName = export };

    private static int PortOf(NbdServer server) => ((IPEndPoint)server.LocalEndPoint!).Port;

    [Fact]
    public async Task Connects_over_tcp_and_reads_what_the_export_holds()
    {
        var export = new MemoryExport("disk", 4 * MiB);
        var content = TestServers.RandomBytes(300 * KiB, seed: 1);
        export.Write(100 * KiB, content);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await NbdClient.ConnectAsync(Tcp(server));

        Assert.Equal(4 * MiB, client.Size);
        Assert.False(client.IsReadOnly);
        Assert.Equal(["base:allocation"], client.MetaContexts);
        var buffer = new byte[300 * KiB];
        await client.ReadAsync(100 * KiB, buffer);
        Assert.Equal(content, buffer);
    }

    [Fact]
    public async Task Connects_over_a_unix_socket()
    {
        var export = new MemoryExport("disk", MiB);
        export.Write(0, [1, 2, 3]);
        var socket = _dir.File("nbd.sock");
        await using var server = await TestServers.StartUnixAsync(socket, export);
        await using var client = await NbdClient.ConnectAsync(new NbdClientOptions { UnixSocket = socket, ExportName = "disk" });

        var buffer = new byte[4];
        await client.ReadAsync(0, buffer);
        Assert.Equal(new byte[] { 1, 2, 3, 0 }, buffer);
    }

    [Fact]
    public async Task Block_status_reports_holes_and_data_and_the_device_maps_them_to_allocation()
    {
        var export = new MemoryExport("disk", MiB, pageSize: 4 * KiB);
        export.Write(8 * KiB, new byte[8 * KiB].Select(_ => (byte)7).ToArray());
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await NbdClient.ConnectAsync(Tcp(server));

        var extents = await client.BlockStatusAsync("base:allocation", 0, MiB);
        Assert.Equal(
            [new ClientExtent(8 * KiB, 3), new ClientExtent(8 * KiB, 0), new ClientExtent(MiB - 16 * KiB, 3)],
            extents);

        await using var device = new NbdBlockDevice(client, "nbd://test/disk");
        Assert.Equal(new DeviceExtent(8 * KiB, Allocated: false, Zero: true), await device.GetAllocationAsync(0, MiB));
        Assert.Equal(new DeviceExtent(8 * KiB, Allocated: true, Zero: false), await device.GetAllocationAsync(8 * KiB, MiB - 8 * KiB));
        Assert.Equal(new DeviceExtent(4 * KiB, Allocated: true, Zero: false), await device.GetAllocationAsync(12 * KiB, 4 * KiB));
    }

    [Fact]
    public async Task The_device_walks_runs_from_one_block_status_reply_until_a_write_through_it()
    {
        var memory = new MemoryExport("disk", MiB, pageSize: 4 * KiB);
        memory.Write(8 * KiB, new byte[8 * KiB].Select(_ => (byte)7).ToArray());
        var queries = 0;
        var export = new ScriptedExport(memory) { BeforeBlockStatus = _ => { Interlocked.Increment(ref queries); return Task.CompletedTask; } };
        await using var server = await TestServers.StartTcpAsync(export);
        await using var device = new NbdBlockDevice(await NbdClient.ConnectAsync(Tcp(server)), "nbd://test/disk");

        var runs = new List<DeviceExtent>();
        for (long at = 0; at < MiB; at += runs[^1].Length) runs.Add(await device.GetAllocationAsync(at, MiB - at));
        Assert.Equal([new(8 * KiB, false, true), new(8 * KiB, true, false), new(MiB - 16 * KiB, false, true)], runs);
        Assert.Equal(1, queries);

        await device.WriteAsync(new byte[] { 1 }, 64 * KiB);
        Assert.Equal(new DeviceExtent(4 * KiB, Allocated: true, Zero: false), await device.GetAllocationAsync(64 * KiB, 64 * KiB));
        Assert.Equal(2, queries);
    }

    [Fact]
    public async Task Without_base_allocation_the_device_reports_everything_allocated_and_block_status_is_refused()
    {
        var export = new MemoryExport("disk", MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        var client = await NbdClient.ConnectAsync(Tcp(server) with { MetaContexts = [] });
        await using var device = new NbdBlockDevice(client, "nbd://test/disk");

        Assert.Empty(client.MetaContexts);
        Assert.Equal(new DeviceExtent(MiB - 100, Allocated: true, Zero: false), await device.GetAllocationAsync(100, 2 * MiB));
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(async () => await client.BlockStatusAsync("base:allocation", 0, MiB));
        Assert.Contains("did not agree to meta context 'base:allocation'", refused.Message);
    }

    [Fact]
    public async Task Requests_above_the_servers_maximum_are_split()
    {
        var export = new MemoryExport("disk", 4 * MiB);
        var content = TestServers.RandomBytes(3 * MiB + 5, seed: 2);
        var server = new NbdServer(NbdServerOptions.Tcp([export], port: 0) with { MaxBlockSize = 64 * KiB });
        await server.StartAsync();
        await using var _ = server;
        await using var client = await NbdClient.ConnectAsync(Tcp(server));

        await client.WriteAsync(7, content);
        Assert.Equal(content, export.ToArray().AsSpan(7, content.Length).ToArray());
        var back = new byte[content.Length];
        await client.ReadAsync(7, back);
        Assert.Equal(content, back);
    }

    [Fact]
    public async Task Replies_are_matched_to_requests_by_cookie_whatever_order_they_come_in()
    {
        var memory = new MemoryExport("disk", MiB);
        memory.Write(0, [0xAA]);
        memory.Write(64 * KiB, [0xBB]);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var export = new ScriptedExport(memory) { BeforeRead = offset => offset == 0 ? release.Task : Task.CompletedTask };
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await NbdClient.ConnectAsync(Tcp(server));

        var first = new byte[1];
        var second = new byte[1];
        var held = client.ReadAsync(0, first).AsTask();
        await client.ReadAsync(64 * KiB, second); // overtakes the held read on the same connection
        Assert.False(held.IsCompleted);
        Assert.Equal(0xBB, second[0]);
        release.SetResult();
        await held;
        Assert.Equal(0xAA, first[0]);
    }

    [Fact]
    public async Task Many_concurrent_reads_each_get_their_own_bytes()
    {
        var export = new MemoryExport("disk", 8 * MiB);
        var content = TestServers.RandomBytes(8 * MiB, seed: 3);
        export.Write(0, content);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await NbdClient.ConnectAsync(Tcp(server));

        var random = new Random(4);
        var reads = Enumerable.Range(0, 200).Select(_ =>
        {
            var offset = random.Next(0, 8 * MiB - 70 * KiB);
            var buffer = new byte[random.Next(1, 70 * KiB)];
            return (offset, buffer, task: client.ReadAsync(offset, buffer).AsTask());
        }).ToList();
        await Task.WhenAll(reads.Select(r => r.task));
        foreach (var (offset, buffer, _) in reads) Assert.Equal(content.AsSpan(offset, buffer.Length).ToArray(), buffer);
    }

    [Fact]
    public async Task Writes_zeroes_trims_and_flushes_reach_the_export()
    {
        var export = new MemoryExport("disk", MiB);
        export.Write(0, TestServers.RandomBytes(256 * KiB, seed: 5));
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await NbdClient.ConnectAsync(Tcp(server));

        var data = TestServers.RandomBytes(10 * KiB, seed: 6);
        await client.WriteAsync(300 * KiB, data, fua: true);
        await client.WriteZeroesAsync(0, 64 * KiB, mayTrim: false);
        await client.WriteZeroesAsync(64 * KiB, 64 * KiB, mayTrim: true);
        await client.TrimAsync(128 * KiB, 128 * KiB);
        var flushes = export.FlushCount;
        await client.FlushAsync();

        Assert.True(export.FlushCount > flushes);
        var image = export.ToArray();
        Assert.Equal(data, image.AsSpan(300 * KiB, data.Length).ToArray());
        Assert.All(image.AsSpan(0, 128 * KiB).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task A_write_to_a_read_only_export_is_refused_with_one_line()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("disk", MiB, isReadOnly: true));
        await using var client = await NbdClient.ConnectAsync(Tcp(server));
        Assert.True(client.IsReadOnly);

        var ex = await Assert.ThrowsAsync<IOException>(async () => await client.WriteAsync(0, new byte[512]));
        Assert.Equal($"nbd export 'disk' on 127.0.0.1:{PortOf(server)} is read-only (the server exports it read-only): write refused", ex.Message);
        await Assert.ThrowsAsync<IOException>(async () => await client.WriteZeroesAsync(0, 512));
        await Assert.ThrowsAsync<IOException>(async () => await client.TrimAsync(0, 512));
    }

    [Fact]
    public async Task A_client_opened_read_only_refuses_writes_to_a_writable_export()
    {
        var export = new MemoryExport("disk", MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await NbdClient.ConnectAsync(Tcp(server) with { ReadOnly = true });
        await using var device = new NbdBlockDevice(client, "nbd://127.0.0.1/disk");

        Assert.True(device.IsReadOnly);
        var ex = await Assert.ThrowsAsync<IOException>(async () => await device.WriteAsync(new byte[512], 0));
        Assert.Contains("is read-only (it was opened read-only): write refused", ex.Message);
        Assert.Empty(export.AllocatedRanges());
    }

    [Fact]
    public async Task An_unknown_export_is_one_line_naming_it_and_the_server()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("disk", MiB));
        var ex = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(Tcp(server, "nope")));
        Assert.Equal($"export 'nope' not found on nbd server 127.0.0.1:{PortOf(server)}", ex.Message);
    }

    [Fact]
    public async Task A_refused_connection_is_one_line_naming_host_port_and_export()
    {
        int port;
        using (var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            port = ((IPEndPoint)listener.LocalEndPoint!).Port; // closed again before we connect: nobody listens there
        }
        var ex = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = port, ExportName = "disk" }));
        Assert.Equal($"cannot connect to nbd server 127.0.0.1:{port} for export 'disk': connection refused", ex.Message);

        var missing = _dir.File("absent.sock");
        var unix = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(new NbdClientOptions { UnixSocket = missing, ExportName = "disk" }));
        Assert.StartsWith($"cannot connect to nbd server unix:{missing} for export 'disk': ", unix.Message);
        Assert.DoesNotContain('\n', unix.Message);
    }

    [Fact]
    public async Task A_server_error_reply_is_an_IOException_naming_the_errno_offset_and_export()
    {
        var export = new ScriptedExport(new MemoryExport("disk", MiB))
        {
            WriteFailure = offset => offset == 4096 ? new NbdException(NbdError.NoSpace, "quota exceeded") : null,
        };
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await NbdClient.ConnectAsync(Tcp(server));

        var ex = await Assert.ThrowsAsync<IOException>(async () => await client.WriteAsync(4096, new byte[512]));
        Assert.Equal($"nbd server 127.0.0.1:{PortOf(server)} export 'disk': ENOSPC on write at 4096 length 512: quota exceeded", ex.Message);
        Assert.Equal(28, ex.HResult);
        await client.WriteAsync(8192, new byte[512]); // the connection carries on
    }

    [Fact]
    public async Task Reads_past_the_end_are_refused_locally_and_the_device_reads_short_at_the_end()
    {
        var export = new MemoryExport("disk", 10 * KiB);
        export.Write(10 * KiB - 2, [5, 6]);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var device = new NbdBlockDevice(await NbdClient.ConnectAsync(Tcp(server)), "nbd://x/disk");

        var buffer = new byte[4 * KiB];
        Assert.Equal(2, await device.ReadAsync(buffer, 10 * KiB - 2));
        Assert.Equal(new byte[] { 5, 6 }, buffer.AsSpan(0, 2).ToArray());
        Assert.Equal(0, await device.ReadAsync(buffer, 10 * KiB));
        var write = await Assert.ThrowsAsync<IOException>(async () => await device.WriteAsync(buffer, 8 * KiB));
        Assert.Contains("an export cannot grow", write.Message);
        Assert.Throws<NotSupportedException>(() => device.SetLength(20 * KiB));
        device.SetLength(10 * KiB);
    }

    [Fact]
    public async Task Disposing_the_client_disconnects_and_the_server_closes_the_connection()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("disk", MiB));
        var client = await NbdClient.ConnectAsync(Tcp(server));
        Assert.Equal(1, server.ConnectionCount);
        await client.DisposeAsync();
        await TestServers.WaitForNoConnectionsAsync(server);
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await client.ReadAsync(0, new byte[1]));

        var device = new NbdBlockDevice(await NbdClient.ConnectAsync(Tcp(server)), "nbd://x/disk");
        device.Dispose(); // the synchronous path sends NBD_CMD_DISC too
        await TestServers.WaitForNoConnectionsAsync(server);
    }

    [Fact]
    public async Task Without_go_the_client_falls_back_to_export_name_and_simple_replies()
    {
        var disk = TestServers.RandomBytes(64 * KiB, seed: 7);
        await using var server = new OldServer(disk);
        var client = await NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = server.Port, ExportName = "old" });

        Assert.Equal("old", server.ExportNameAsked);
        Assert.Equal(64 * KiB, client.Size);
        Assert.True(client.IsReadOnly);
        Assert.Empty(client.MetaContexts); // no structured replies, so no contexts
        var buffer = new byte[10 * KiB];
        await client.ReadAsync(5 * KiB, buffer);
        Assert.Equal(disk.AsSpan(5 * KiB, 10 * KiB).ToArray(), buffer);
        await using (var device = new NbdBlockDevice(client, "nbd://old"))
            Assert.Equal(new DeviceExtent(64 * KiB, Allocated: true, Zero: false), await device.GetAllocationAsync(0, 64 * KiB));
        await server.Served; // ended by our NBD_CMD_DISC
    }

    [Fact]
    public async Task Requests_in_flight_fail_with_one_line_when_the_server_hangs_up()
    {
        await using var server = new OldServer(new byte[64 * KiB], closeAfterRequests: 2);
        await using var client = await NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = server.Port, ExportName = "old" });
        await client.ReadAsync(0, new byte[512]);

        var ex = await Assert.ThrowsAnyAsync<IOException>(async () => await client.ReadAsync(0, new byte[512]));
        Assert.Equal($"nbd server 127.0.0.1:{server.Port} export 'old': the server closed the connection", ex.Message);
        var after = await Assert.ThrowsAnyAsync<IOException>(async () => await client.ReadAsync(0, new byte[1]));
        Assert.Equal(ex.Message, after.Message);
    }

    [Fact]
    public async Task A_reply_under_a_cookie_never_sent_ends_the_connection_with_a_protocol_error()
    {
        await using var server = new OldServer(new byte[64 * KiB], wrongCookie: true);
        await using var client = await NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = server.Port, ExportName = "old" });

        var ex = await Assert.ThrowsAnyAsync<IOException>(async () => await client.ReadAsync(0, new byte[512]));
        Assert.StartsWith($"nbd server 127.0.0.1:{server.Port} export 'old': protocol error: reply to unknown cookie ", ex.Message);
        await Assert.ThrowsAnyAsync<IOException>(async () => await client.ReadAsync(0, new byte[1])); // nothing on the stream can be trusted now
    }

    [Fact]
    public async Task Something_that_is_not_an_nbd_server_is_named_as_such()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var talker = Task.Run(async () =>
        {
            using var peer = await listener.AcceptAsync();
            await peer.SendAsync("HTTP/1.1 400 Bad Request\r\n\r\n"u8.ToArray());
            await peer.ReceiveAsync(new byte[1]); // until the client hangs up
        });

        var ex = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = port }));
        Assert.Equal($"nbd server 127.0.0.1:{port} is not an NBD server (no NBDMAGIC in its greeting)", ex.Message);
        await talker;
    }

    [Fact]
    public async Task The_block_device_reads_and_writes_through_its_sync_and_async_forms()
    {
        var export = new MemoryExport("disk", MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        using var device = new NbdBlockDevice(await NbdClient.ConnectAsync(Tcp(server)), "nbd://127.0.0.1/disk");

        Assert.Equal("nbd://127.0.0.1/disk", device.Name);
        Assert.Equal(MiB, device.Length);
        device.Write([1, 2, 3, 4], 4096);
        await device.WriteAsync(new byte[] { 9, 9 }, 8192);
        device.Flush();
        var buffer = new byte[4];
        Assert.Equal(4, device.Read(buffer, 4096));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, buffer);
        Assert.Equal(new byte[] { 9, 9 }, export.ToArray().AsSpan(8192, 2).ToArray());
        Assert.False(device.ReserveSpace(0, 4096));
    }
}
