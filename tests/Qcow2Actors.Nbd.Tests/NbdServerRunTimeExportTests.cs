using System.Buffers.Binary;
using System.Text;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests;

public class NbdServerRunTimeExportTests
{
    private static async Task<NbdServer> StartEmptyAsync()
    {
        var server = new NbdServer(NbdServerOptions.Tcp([], port: 0) with { AllowNoExports = true });
        await server.StartAsync();
        return server;
    }

    private static async Task<List<string>> ListAsync(NbdServer server)
    {
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var replies = await client.OptionAsync(RawNbdClient.OptList, []);
        Assert.Equal(RawNbdClient.RepAck, replies[^1].Type);
        return [.. replies.Where(r => r.Type == RawNbdClient.RepServer)
            .Select(r => Encoding.UTF8.GetString(r.Data, 4, (int)BinaryPrimitives.ReadUInt32BigEndian(r.Data)))];
    }

    [Fact]
    public void A_server_without_exports_is_still_refused_unless_it_allows_none()
    {
        Assert.Throws<ArgumentException>(() => new NbdServer(NbdServerOptions.Tcp([], port: 0)));
    }

    [Fact]
    public async Task An_export_added_while_running_is_listed_and_served()
    {
        await using var server = await StartEmptyAsync();
        Assert.Empty(await ListAsync(server));

        server.AddExport(new MemoryExport("acme/disk1", 1 << 20));
        server.AddExport(new MemoryExport("acme/disk2", 2 << 20));

        Assert.Equal(["acme/disk1", "acme/disk2"], await ListAsync(server));
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var (size, _) = await client.GoAsync("acme/disk2");
        Assert.Equal(2UL << 20, size);
        // Counted before GO's reply is sent, so the client that has read it sees the count at once (CI once saw 0
        // when the connection was counted only after the handshake returned).
        Assert.Equal(1, server.GetConnectionCount("acme/disk2"));
        Assert.Equal(0, server.GetConnectionCount("acme/disk1"));
    }

    [Fact]
    public async Task Adding_a_name_already_served_is_refused_naming_it()
    {
        await using var server = await StartEmptyAsync();
        server.AddExport(new MemoryExport("a", 4096));

        var error = Assert.Throws<ArgumentException>(() => server.AddExport(new MemoryExport("a", 4096)));
        Assert.Contains("'a'", error.Message);
    }

    [Fact]
    public async Task A_removed_export_is_unknown_to_new_clients_and_gone_from_the_list()
    {
        await using var server = await StartEmptyAsync();
        server.AddExport(new MemoryExport("keep", 4096));
        server.AddExport(new MemoryExport("drop", 4096));

        Assert.True(await server.RemoveExportAsync("drop"));
        Assert.False(await server.RemoveExportAsync("drop"));

        Assert.Equal(["keep"], await ListAsync(server));
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var go = await client.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("drop"));
        Assert.Equal(RawNbdClient.RepErrUnknown, go[^1].Type);
    }

    [Fact]
    public async Task Removing_an_export_answers_its_request_in_flight_then_disconnects_its_clients_and_spares_the_others()
    {
        await using var server = await StartEmptyAsync();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var readStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var dropped = new ScriptedExport(new MemoryExport("drop", 1 << 16))
        {
            BeforeRead = _ => { readStarted.TrySetResult(); return release.Task; },
        };
        server.AddExport(dropped);
        server.AddExport(new MemoryExport("keep", 1 << 16));
        await using var victim = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await victim.GoAsync("drop");
        await using var other = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await other.GoAsync("keep");

        await victim.SendRequestAsync(0, RawNbdClient.CmdRead, 7, 0, 512);
        await readStarted.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var removal = server.RemoveExportAsync("drop");
        Assert.False(removal.IsCompleted); // waits for the read in flight
        release.SetResult();

        var (error, handle, data) = await victim.ReadSimpleReplyAsync(512);
        Assert.Equal(0u, error);
        Assert.Equal(7UL, handle);
        Assert.Equal(512, data.Length);
        Assert.True(await removal.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(await victim.WaitForCloseAsync());

        await other.SendRequestAsync(0, RawNbdClient.CmdRead, 8, 0, 512);
        var (otherError, otherHandle, _) = await other.ReadSimpleReplyAsync(512);
        Assert.Equal(0u, otherError);
        Assert.Equal(8UL, otherHandle);
        Assert.Equal(1, server.ConnectionCount);
    }

    [Fact]
    public async Task The_empty_name_selects_the_first_export_served_now()
    {
        await using var server = await StartEmptyAsync();
        server.AddExport(new MemoryExport("first", 4096));
        server.AddExport(new MemoryExport("second", 8192));
        await server.RemoveExportAsync("first");

        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var (size, _) = await client.GoAsync("");
        Assert.Equal(8192UL, size);
    }

    [Fact]
    public async Task Disconnecting_a_tenant_closes_its_clients_at_once_and_spares_other_tenants()
    {
        var stuck = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await StartEmptyAsync();
        try
        {
            var readStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            server.AddExport(new ScriptedExport(new MemoryExport("acme/disk", 1 << 16) { Tenant = "acme" })
            {
                BeforeRead = _ => { readStarted.TrySetResult(); return stuck.Task; },
            });
            server.AddExport(new MemoryExport("globex/disk", 1 << 16) { Tenant = "globex" });
            await using var revoked = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            await revoked.GoAsync("acme/disk");
            await using var other = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            await other.GoAsync("globex/disk");
            await revoked.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
            await readStarted.Task.WaitAsync(TimeSpan.FromSeconds(10));

            // Not waited for: the read in flight never completes, the connection closes anyway.
            Assert.Equal(1, await server.DisconnectTenantAsync("acme").WaitAsync(TimeSpan.FromSeconds(10)));
            Assert.True(await revoked.WaitForCloseAsync());

            await other.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 0, 512);
            var (error, handle, _) = await other.ReadSimpleReplyAsync(512).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(0u, error);
            Assert.Equal(2UL, handle);
            Assert.Equal(0, await server.DisconnectTenantAsync("nobody"));
        }
        finally
        {
            stuck.TrySetResult(); // however the test ends, the server's disposal must not wait on it
        }
    }
}
