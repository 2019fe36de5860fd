using System.Buffers.Binary;
using System.Net;
using System.Text;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Metrics;
using Qcow2Actors.Tests.Shared;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>
/// The bounds that keep a hostile client from taking the server from others: per tenant, while
/// negotiating, when idle, on a dribbled option, on an oversized write, on replies nobody reads.
/// </summary>
public sealed class NbdServerHardeningTests
{
    private const int MiB = 1024 * 1024;
    private const uint RepErrPolicy = 0x80000002;
    private const uint EOVERFLOW = 75;

    private static async Task<NbdServer> StartAsync(NbdServerOptions options)
    {
        var server = new NbdServer(options with { EndPoint = new IPEndPoint(IPAddress.Loopback, 0) });
        await server.StartAsync();
        return server;
    }

    /// <summary>Records what <paramref name="server"/> (alone, by its endpoint) counts.</summary>
    private static MetricRecorder Refusals(NbdServer server) =>
        MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.EndpointTag, server.LocalEndPoint!.ToString()!);

    [Fact]
    public async Task A_transmitting_client_with_nothing_in_flight_is_closed_after_the_idle_timeout()
    {
        var time = new ArmedTimerProvider();
        var log = new CollectingLoggerFactory();
        await using var server = await StartAsync(new NbdServerOptions
        {
            Exports = [new MemoryExport("disk", MiB)],
            HandshakeTimeout = TimeSpan.Zero, // no handshake timer: the only timer armed is the idle one
            IdleTimeout = TimeSpan.FromSeconds(30),
            TimeProvider = time,
            LoggerFactory = log,
        });
        using var recorder = Refusals(server);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("disk");
        Assert.Equal(TimeSpan.FromSeconds(30), await time.NextArmedAsync());

        time.Advance(TimeSpan.FromSeconds(20));
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
        Assert.Equal((0u, 1ul), ((await c.ReadSimpleReplyAsync(512)).Error, 1ul));

        // The server stamps activity when the request arrives (20 s) and again when the reply has gone and its slot
        // is back, which can trail the client reading the reply. Fake time moves only once that has happened, so
        // both stamps say 20 s: the check at 30 s re-arms for the 20 s of quiet still owed, and closes at 50 s.
        await WaitUntilAsync(() => !server.HasRequestsInFlight);
        var now = TimeSpan.FromSeconds(30);
        time.Advance(TimeSpan.FromSeconds(10));
        var closed = c.WaitForCloseAsync(30_000);
        var again = await time.NextArmedAsync();
        Assert.Equal(TimeSpan.FromSeconds(20), again);
        Assert.Empty(log.Warnings);
        Assert.Equal(1, server.ConnectionCount);
        time.Advance(again - TimeSpan.FromTicks(1));
        Assert.False(closed.IsCompleted, $"the client was closed before {now + again}, though it asked at 20 s");
        time.Advance(TimeSpan.FromTicks(1));
        Assert.True(await closed, "an idle client outlived the idle timeout");
        Assert.Contains("no request for 30 s (idle-timeout)", Assert.Single(log.Warnings));
        Assert.Equal(1, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "idle-timeout")));
    }

    /// <summary>Waits (bounded) for server-side state that follows a reply the client has already read.</summary>
    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the server never gave back the answered request's slot");
            await Task.Yield();
        }
    }

    [Fact]
    public async Task A_request_in_flight_keeps_a_client_past_the_idle_timeout()
    {
        var time = new ArmedTimerProvider();
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var reading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var export = new ScriptedExport(new MemoryExport("disk", MiB))
        {
            BeforeRead = async _ =>
            {
                reading.TrySetResult();
                await gate.Task;
            },
        };
        await using var server = await StartAsync(new NbdServerOptions
        {
            Exports = [export],
            HandshakeTimeout = TimeSpan.Zero,
            IdleTimeout = TimeSpan.FromSeconds(30),
            TimeProvider = time,
        });
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("disk");
        Assert.Equal(TimeSpan.FromSeconds(30), await time.NextArmedAsync());
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 7, 0, 512);
        await reading.Task.WaitAsync(TimeSpan.FromSeconds(10));

        time.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(TimeSpan.FromSeconds(30), await time.NextArmedAsync()); // busy: a whole timeout more
        gate.SetResult();
        Assert.Equal((0u, 7ul), ((await c.ReadSimpleReplyAsync(512)).Error, 7ul));
        Assert.Equal(1, server.ConnectionCount);
    }

    [Fact]
    public void The_idle_timeout_is_off_by_default_and_a_negative_one_or_bound_is_refused()
    {
        Assert.Equal(TimeSpan.Zero, new NbdServerOptions { Exports = [] }.IdleTimeout);
        Assert.Throws<ArgumentException>(() => new NbdServer(new NbdServerOptions { Exports = [new MemoryExport("d", MiB)], IdleTimeout = TimeSpan.FromSeconds(-1) }));
        Assert.Throws<ArgumentException>(() => new NbdServer(new NbdServerOptions { Exports = [new MemoryExport("d", MiB)], MaxConnectionsPerTenant = -1 }));
        Assert.Throws<ArgumentException>(() => new NbdServer(new NbdServerOptions { Exports = [new MemoryExport("d", MiB)], MaxNegotiatingConnections = -1 }));
        Assert.Throws<ArgumentException>(() => new NbdServer(new NbdServerOptions { Exports = [new MemoryExport("d", MiB)], MaxInFlightBytes = 0 }));
    }

    [Fact]
    public async Task A_tenant_beyond_its_connection_bound_gets_a_policy_refusal_and_other_tenants_are_served()
    {
        var time = new ArmedTimerProvider();
        var log = new CollectingLoggerFactory();
        await using var server = await StartAsync(new NbdServerOptions
        {
            Exports =
            [
                new MemoryExport("a1", MiB) { Tenant = "acme" },
                new MemoryExport("a2", MiB) { Tenant = "acme" },
                new MemoryExport("b1", MiB) { Tenant = "beta" },
                new MemoryExport("shared", MiB),
            ],
            MaxConnectionsPerTenant = 2,
            TimeProvider = time,
            LoggerFactory = log,
        });
        using var recorder = Refusals(server);
        await using var first = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await first.GoAsync("a1");
        await using var second = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await second.GoAsync("a2");
        Assert.Equal(2, server.GetTenantConnectionCount("acme"));

        // The third of acme is refused with a reason it can show, and may still negotiate something else.
        await using var third = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var refused = Assert.Single(await third.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("a1")));
        Assert.Equal(RepErrPolicy, refused.Type);
        Assert.Equal("too many connections for this tenant (2 open, the most allowed)", Encoding.UTF8.GetString(refused.Data));
        await third.GoAsync("shared"); // an export without a tenant is not counted

        // EXPORT_NAME cannot carry an error: dropped.
        await using (var named = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await named.SendOptionAsync(RawNbdClient.OptExportName, Encoding.UTF8.GetBytes("a2"));
            Assert.True(await named.WaitForCloseAsync(), "EXPORT_NAME beyond the tenant bound was let in");
        }

        await using var beta = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await beta.GoAsync("b1");
        await beta.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4, [1, 2, 3, 4]);
        Assert.Equal(0u, (await beta.ReadSimpleReplyAsync()).Error);

        // A slot freed by a client leaving is there for the next one.
        var closed = server.NextConnectionClosed;
        await first.SendRequestAsync(0, RawNbdClient.CmdDisc, 0, 0, 0);
        await closed.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, server.GetTenantConnectionCount("acme"));
        await using var again = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await again.GoAsync("a1");

        var line = Assert.Single(log.Warnings); // the EXPORT_NAME refusal fell within the throttle's interval
        Assert.Contains("tenant 'acme' has 2 connections open, the most allowed (max-connections-per-tenant)", line);
        Assert.Equal(2, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "max-connections-per-tenant")));
    }

    [Fact]
    public async Task A_client_beyond_the_negotiating_bound_closes_the_oldest_handshake_and_transmitting_clients_are_untouched()
    {
        var time = new ArmedTimerProvider();
        var log = new CollectingLoggerFactory();
        await using var server = await StartAsync(new NbdServerOptions
        {
            Exports = [new MemoryExport("disk", MiB)],
            MaxConnections = 10,
            MaxNegotiatingConnections = 2,
            TimeProvider = time,
            LoggerFactory = log,
        });
        Assert.Equal(2, server.MaxNegotiatingConnections);
        using var recorder = Refusals(server);
        await using var working = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await working.GoAsync("disk"); // transmitting: not negotiating any more

        // Two idle handshakes fill the bound; each newcomer closes the oldest of them.
        var idle = new List<RawNbdClient>();
        for (var i = 0; i < 4; i++) idle.Add(await RawNbdClient.ConnectAsync(server.LocalEndPoint!));
        Assert.True(await idle[0].WaitForCloseAsync(), "the oldest handshake was kept past max-negotiating");
        Assert.True(await idle[1].WaitForCloseAsync(), "the second oldest handshake was kept past max-negotiating");

        // A client that negotiates gets in although idle handshakes fill the bound.
        await using var late = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await late.GoAsync("disk");
        Assert.True(await idle[2].WaitForCloseAsync(), "the oldest handshake was kept when a client that negotiates came");
        await idle[3].GoAsync("disk"); // the newest one was left alone

        foreach (var c in new[] { working, late, idle[3] })
        {
            await c.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
            Assert.Equal(0u, (await c.ReadSimpleReplyAsync(512)).Error);
        }
        foreach (var c in idle) await c.DisposeAsync();
        Assert.Contains("the oldest of 2 connections still negotiating (max-negotiating)", Assert.Single(log.Warnings));
        Assert.Equal(3, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "max-negotiating")));
    }

    [Theory]
    [InlineData(0, 1024, 256)] // a quarter by default...
    [InlineData(0, 40, 16)]    // ...or all of it up to 16
    [InlineData(0, 2, 2)]
    [InlineData(50, 1024, 50)]
    [InlineData(50, 10, 10)]   // never above the connection bound
    public void The_negotiating_bound_leaves_most_connections_to_clients_that_negotiate(int configured, int maxConnections, int expected) =>
        Assert.Equal(expected, NbdServerOptions.EffectiveMaxNegotiating(configured, maxConnections));

    [Fact]
    public async Task The_handshake_timeout_also_ends_a_client_dribbling_a_4_GiB_option()
    {
        var time = new ArmedTimerProvider();
        var log = new CollectingLoggerFactory();
        await using var server = await StartAsync(new NbdServerOptions
        {
            Exports = [new MemoryExport("disk", MiB)],
            HandshakeTimeout = TimeSpan.FromSeconds(5),
            TimeProvider = time,
            LoggerFactory = log,
        });
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        Assert.Equal(TimeSpan.FromSeconds(5), await time.NextArmedAsync());
        var header = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(header, 0x49484156454F5054);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), RawNbdClient.OptList);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), uint.MaxValue);
        await c.WriteAsync(header);
        for (var i = 0; i < 4; i++) await c.WriteAsync(new byte[MiB]); // drained, never buffered whole

        time.Advance(TimeSpan.FromSeconds(5));
        Assert.True(await c.WaitForCloseAsync(), "a client sending a 4 GiB option outlived the handshake timeout");
        Assert.Contains("(handshake-timeout)", Assert.Single(log.Warnings));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_oversized_write_is_answered_with_EOVERFLOW_before_the_connection_closes(bool structured)
    {
        var export = new MemoryExport("disk", 4 * MiB);
        await using var server = await StartAsync(new NbdServerOptions { Exports = [export], MaxBlockSize = MiB });
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("disk", structured);
        // A request ahead of it is answered too: the close waits for every reply.
        await c.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4, [9, 9, 9, 9]);
        await c.WriteAsync(RawNbdClient.Request(0, RawNbdClient.CmdWrite, 2, 0, 2 * MiB, new byte[4096]));

        // Replies may come in either order: the write runs on the pool, the refusal is sent by the reader at once.
        var replies = new[] { await c.ReadAnyReplyAsync(), await c.ReadAnyReplyAsync() }.OrderBy(r => r.Handle).ToArray();
        Assert.Equal(((ushort)0, (ushort)0, 1ul, 0u), (replies[0].Flags, replies[0].Type, replies[0].Handle, replies[0].Error));
        if (!structured) Assert.Equal(((ushort)0, (ushort)0, 2ul, EOVERFLOW), (replies[1].Flags, replies[1].Type, replies[1].Handle, replies[1].Error));
        else
        {
            var (flags, type, handle, error, payload) = replies[1];
            Assert.Equal(((ushort)1, (ushort)0x8001, 2ul, EOVERFLOW), (flags, type, handle, error)); // DONE, ERROR
            Assert.Contains("exceeds the maximum block size 1048576", Encoding.UTF8.GetString(payload, 6, payload.Length - 6));
        }
        Assert.True(await c.WaitForCloseAsync());
        Assert.Equal(9, export.ToArray()[0]);
        Assert.Equal(0, export.ToArray()[4]); // none of the oversized payload was applied
    }

    [Fact]
    public async Task Block_status_replies_count_against_the_byte_bound_so_unread_ones_cannot_pile_up()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var export = new ScriptedExport(new MemoryExport("disk", MiB)) { BeforeBlockStatus = _ => gate.Task };
        // Room for one block-status reply at its largest, not two.
        await using var server = new NbdServer(new NbdServerOptions
        {
            Exports = [export],
            EndPoint = new IPEndPoint(IPAddress.Loopback, 0),
            MaxInFlightBytes = NbdCommandDispatcher.MaxBlockStatusReplyLength + 1,
        });
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.ReaderWaitingForBytes = () => waiting.TrySetResult();
        await server.StartAsync();
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("disk", structured: true, meta: true);
        for (ulong i = 0; i < 3; i++) await c.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, i, 0, 65536);

        await waiting.Task.WaitAsync(TimeSpan.FromSeconds(10)); // the second waits for the first's bytes
        gate.SetResult();
        for (ulong i = 0; i < 3; i++)
        {
            var (_, type, handle, _) = await c.ReadChunkAsync();
            Assert.Equal(((ushort)5, i), (type, handle)); // BLOCK_STATUS, in order: each waited for the one before
        }
    }
}
