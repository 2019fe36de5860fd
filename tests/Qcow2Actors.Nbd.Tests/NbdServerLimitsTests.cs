using System.Net;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>
/// What keeps idle or surplus clients from exhausting the server: a handshake deadline (timed by
/// the injected clock) and a bound on open connections; each refusal or timeout logged once.
/// </summary>
public sealed class NbdServerLimitsTests
{
    private const int MiB = 1024 * 1024;

    private static async Task<NbdServer> StartAsync(ArmedTimerProvider time, CollectingLoggerFactory log, int maxConnections = 0)
    {
        var server = new NbdServer(new NbdServerOptions
        {
            Exports = [new MemoryExport("disk", MiB)],
            EndPoint = new IPEndPoint(IPAddress.Loopback, 0),
            HandshakeTimeout = TimeSpan.FromSeconds(5),
            MaxConnections = maxConnections,
            TimeProvider = time,
            LoggerFactory = log,
        });
        await server.StartAsync();
        return server;
    }

    [Fact]
    public async Task A_client_that_does_not_negotiate_in_time_is_closed_and_one_that_did_keeps_working()
    {
        var time = new ArmedTimerProvider();
        var log = new CollectingLoggerFactory();
        await using var server = await StartAsync(time, log);
        await using var working = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await working.GoAsync("disk");
        Assert.Equal(TimeSpan.FromSeconds(5), await time.NextArmedAsync());

        var idle = new List<RawNbdClient>();
        for (int i = 0; i < 3; i++)
        {
            // The hello arrives once the deadline is armed; then the client says nothing.
            idle.Add(await RawNbdClient.ConnectAsync(server.LocalEndPoint!, handshake: false));
            await idle[i].ReadAsync(18);
            Assert.Equal(TimeSpan.FromSeconds(5), await time.NextArmedAsync());
        }
        time.Advance(TimeSpan.FromSeconds(5));
        foreach (var client in idle)
        {
            Assert.True(await client.WaitForCloseAsync(), "an idle client outlived the handshake timeout");
            await client.DisposeAsync();
        }

        await working.SendRequestAsync(0, RawNbdClient.CmdRead, 7, 0, 4096);
        var (error, handle, data) = await working.ReadSimpleReplyAsync(4096);
        Assert.Equal((0u, 7ul, 4096), (error, handle, data.Length));
        var line = Assert.Single(log.Warnings);
        Assert.Contains("no export negotiated within 5 s (handshake-timeout)", line);
    }

    [Fact]
    public async Task Clients_beyond_the_connection_bound_are_closed_at_once_and_the_admitted_ones_served()
    {
        var time = new ArmedTimerProvider();
        var log = new CollectingLoggerFactory();
        await using var server = await StartAsync(time, log, maxConnections: 2);
        Assert.Equal(2, server.MaxConnections);
        await using var first = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await using var second = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);

        for (int i = 0; i < 3; i++)
        {
            await using var surplus = await RawNbdClient.ConnectAsync(server.LocalEndPoint!, handshake: false);
            Assert.True(await surplus.WaitForCloseAsync(), "a client beyond max-connections was kept");
        }

        await first.GoAsync("disk");
        await first.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
        Assert.Equal(0u, (await first.ReadSimpleReplyAsync(512)).Error);
        var line = Assert.Single(log.Warnings);
        Assert.Contains("2 connections open, the most allowed (max-connections)", line);
    }

    [Fact]
    public void A_negative_connection_bound_or_handshake_timeout_is_refused()
    {
        Assert.Throws<ArgumentException>(() => new NbdServer(new NbdServerOptions { Exports = [new MemoryExport("d", MiB)], MaxConnections = -1 }));
        Assert.Throws<ArgumentException>(() => new NbdServer(new NbdServerOptions { Exports = [new MemoryExport("d", MiB)], HandshakeTimeout = TimeSpan.FromSeconds(-1) }));
    }

    [Theory]
    [InlineData(0, 256, 115, 70, false)]     // half of what is free
    [InlineData(0, 1024, 115, 454, false)]
    [InlineData(0, 20000, 115, 1024, false)] // at most 1024 by default
    [InlineData(0, 150, 115, 1, false)]      // at least one
    [InlineData(1000, 256, 115, 77, true)]   // configured past the limit: lowered, 64 kept free
    [InlineData(1000, 20000, 115, 1000, false)]
    [InlineData(5, 256, 115, 5, false)]
    public void The_connection_bound_keeps_descriptors_free(int configured, long softLimit, int open, int expected, bool lowered) =>
        Assert.Equal((expected, lowered), NbdServerOptions.EffectiveMaxConnections(configured, softLimit, open));
}
