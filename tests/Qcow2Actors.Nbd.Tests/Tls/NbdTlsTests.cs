using System.Buffers.Binary;
using System.Security.Authentication;
using System.Text;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Metrics;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests.Tls;

/// <summary>NBD_OPT_STARTTLS with a hand-written client: TLS modes, client certificates, and what each tenant may see.</summary>
public sealed class NbdTlsTests
{
    private const int MiB = 1024 * 1024;
    private static TestPki Pki => TestPki.Shared;

    private static async Task<NbdServer> StartAsync(NbdTlsMode mode, Func<NbdServerOptions, NbdServerOptions>? configure = null, params INbdExport[] exports)
    {
        var options = NbdServerOptions.Tcp(exports, port: 0) with { TlsMode = mode, TlsCredentials = Pki.Credentials };
        var server = new NbdServer(configure?.Invoke(options) ?? options);
        await server.StartAsync();
        return server;
    }

    private static string TenantOf(NbdClientIdentity identity) =>
        identity.SubjectIs("CN=acme-vm1,O=Acme") ? "acme" : identity.Matches("vm1.globex.example") ? "globex" : null!;

    private static NbdServerOptions Tenanted(NbdServerOptions options) => options with { TenantOf = id => id.Tls ? TenantOf(id) : null };

    private static INbdExport[] TenantExports() =>
    [
        new MemoryExport("acme-disk", MiB) { Tenant = "acme" },
        new MemoryExport("globex-disk", MiB) { Tenant = "globex" },
        new MemoryExport("shared", MiB),
    ];

    private static List<string> Names(List<(uint Type, byte[] Data)> list) =>
        [.. list.Where(r => r.Type == RawNbdClient.RepServer).Select(r => Encoding.UTF8.GetString(r.Data, 4, (int)BinaryPrimitives.ReadUInt32BigEndian(r.Data)))];

    private static byte[] OptionHeader(uint option, uint length)
    {
        var header = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(header, 0x49484156454F5054); // IHAVEOPT
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), length);
        return header;
    }

    [Fact]
    public async Task Required_tls_answers_every_option_but_starttls_and_abort_with_tls_reqd_then_serves_over_tls()
    {
        var export = new MemoryExport("disk", 4 * MiB);
        await using var server = await StartAsync(NbdTlsMode.Required, null, export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);

        Assert.Equal(RawNbdClient.RepErrTlsReqd, (await c.OptionAsync(RawNbdClient.OptList, [])).Single().Type);
        Assert.Equal(RawNbdClient.RepErrTlsReqd, (await c.OptionAsync(RawNbdClient.OptInfo, RawNbdClient.InfoRequest("disk"))).Single().Type);
        Assert.Equal(RawNbdClient.RepErrTlsReqd, (await c.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("disk"))).Single().Type);
        Assert.Equal(RawNbdClient.RepErrTlsReqd, (await c.OptionAsync(RawNbdClient.OptStructuredReply, [])).Single().Type);
        Assert.Equal(RawNbdClient.RepErrInvalid, (await c.OptionAsync(RawNbdClient.OptStartTls, [1])).Single().Type); // STARTTLS takes no data

        await c.StartTlsAsync(Pki.AcmeClient, Pki.Authority);
        Assert.Equal(RawNbdClient.RepErrInvalid, (await c.OptionAsync(RawNbdClient.OptStartTls, [])).Single().Type); // already TLS
        Assert.Equal(["disk"], Names(await c.OptionAsync(RawNbdClient.OptList, [])));
        await c.GoAsync("disk", structured: true);

        // A pipelined batch of writes, then reads large enough to span many TLS records, all over TLS.
        var data = TestServers.RandomBytes(MiB, seed: 7);
        for (ulong i = 0; i < 4; i++) await c.SendRequestAsync(0, RawNbdClient.CmdWrite, i, i * MiB, MiB, data);
        for (var i = 0; i < 4; i++) Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
        for (ulong i = 0; i < 4; i++) await c.SendRequestAsync(0, RawNbdClient.CmdRead, 10 + i, i * MiB, MiB);
        for (var i = 0; i < 4; i++)
        {
            var (flags, type, _, payload) = await c.ReadChunkAsync();
            Assert.Equal(1, flags); // DONE: one chunk per read
            Assert.Equal(1, type); // OFFSET_DATA
            Assert.Equal(data, payload.AsSpan(8).ToArray());
        }
        await c.SendRequestAsync(0, RawNbdClient.CmdDisc, 99, 0, 0);
        Assert.True(await c.WaitForCloseAsync());
    }

    [Fact]
    public async Task Required_tls_drops_export_name_in_plain_text_and_counts_it()
    {
        await using var server = await StartAsync(NbdTlsMode.Required, null, new MemoryExport("disk", MiB));
        using var recorder = MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.EndpointTag, server.LocalEndPoint!.ToString()!);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.SendOptionAsync(RawNbdClient.OptExportName, Encoding.UTF8.GetBytes("disk"));
        Assert.True(await c.WaitForCloseAsync());
        Assert.Equal(1, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "tls-required")));
    }

    [Fact]
    public async Task Optional_tls_serves_plain_text_clients_and_accepts_starttls()
    {
        await using var server = await StartAsync(NbdTlsMode.Optional, null, new MemoryExport("disk", MiB));
        await using (var plain = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            Assert.Equal(["disk"], Names(await plain.OptionAsync(RawNbdClient.OptList, [])));
            await plain.GoAsync("disk");
            await plain.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
            Assert.Equal(0u, (await plain.ReadSimpleReplyAsync(512)).Error);
        }
        await using var tls = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await tls.StartTlsAsync(Pki.GlobexClient, Pki.Authority);
        await tls.GoAsync("disk");
        await tls.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
        Assert.Equal(0u, (await tls.ReadSimpleReplyAsync(512)).Error);
    }

    [Fact]
    public async Task Off_answers_starttls_as_unsupported()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("disk", MiB));
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        Assert.Equal(RawNbdClient.RepErrUnsup, (await c.OptionAsync(RawNbdClient.OptStartTls, [])).Single().Type);
    }

    [Fact]
    public async Task A_client_without_a_certificate_or_with_one_another_ca_signed_fails_the_handshake_and_is_counted()
    {
        await using var server = await StartAsync(NbdTlsMode.Required, null, new MemoryExport("disk", MiB));
        using var recorder = MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.EndpointTag, server.LocalEndPoint!.ToString()!);
        foreach (var certificate in new[] { null, Pki.StrangerClient })
        {
            await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            try
            {
                await c.StartTlsAsync(certificate, Pki.Authority);
                // TLS 1.3 finishes the client's side before the server has judged its certificate: the refusal shows next.
                await c.SendOptionAsync(RawNbdClient.OptList, []);
                Assert.True(await c.WaitForCloseAsync());
            }
            catch (Exception ex) when (ex is AuthenticationException or IOException)
            {
                // Refused during the handshake itself (TLS 1.2, or the alert came first).
            }
        }
        await TestServers.WaitForNoConnectionsAsync(server);
        Assert.Equal(2, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "tls-handshake")));
    }

    [Fact]
    public async Task An_unauthorized_certificate_is_refused_after_tls()
    {
        await using var server = await StartAsync(NbdTlsMode.Required, o => o with { Authorize = id => id.SubjectIs(TestPki.AcmeSubject) }, new MemoryExport("disk", MiB));
        using var recorder = MetricRecorder.ForTag(NbdMetrics.MeterName, NbdMetrics.EndpointTag, server.LocalEndPoint!.ToString()!);
        await using (var globex = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await globex.StartTlsAsync(Pki.GlobexClient, Pki.Authority);
            await globex.SendOptionAsync(RawNbdClient.OptList, []);
            Assert.True(await globex.WaitForCloseAsync());
        }
        await using var acme = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await acme.StartTlsAsync(Pki.AcmeClient, Pki.Authority);
        Assert.Equal(["disk"], Names(await acme.OptionAsync(RawNbdClient.OptList, [])));
        Assert.Equal(1, recorder.Sum(NbdMetrics.ConnectionsRefused, (NbdMetrics.ReasonTag, "tls-authz")));
    }

    [Fact]
    public async Task With_an_allow_list_optional_tls_lets_no_plain_text_client_list_or_enter_an_export()
    {
        await using var server = await StartAsync(NbdTlsMode.Optional, o => o with { Authorize = id => id.SubjectIs(TestPki.AcmeSubject) }, new MemoryExport("disk", MiB));
        await using (var plain = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            Assert.Equal(RawNbdClient.RepErrTlsReqd, (await plain.OptionAsync(RawNbdClient.OptList, [])).Single().Type);
            Assert.Equal(RawNbdClient.RepErrTlsReqd, (await plain.OptionAsync(RawNbdClient.OptInfo, RawNbdClient.InfoRequest("disk"))).Single().Type);
            Assert.Equal(RawNbdClient.RepErrTlsReqd, (await plain.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("disk"))).Single().Type);
            await plain.SendOptionAsync(RawNbdClient.OptExportName, Encoding.UTF8.GetBytes("disk"));
            Assert.True(await plain.WaitForCloseAsync());
        }
        await using var acme = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await acme.StartTlsAsync(Pki.AcmeClient, Pki.Authority);
        await acme.GoAsync("disk");
    }

    [Fact]
    public void An_allow_list_without_tls_is_refused()
    {
        var options = NbdServerOptions.Tcp([new MemoryExport("disk", MiB)], port: 0) with { Authorize = _ => true };
        Assert.Contains("Authorize needs TLS", Assert.Throws<ArgumentException>(() => new NbdServer(options)).Message);
    }

    [Fact]
    public async Task A_client_flooding_past_starttls_without_reading_is_closed_and_the_server_still_stops()
    {
        var time = new ArmedTimerProvider();
        var server = await StartAsync(NbdTlsMode.Optional, o => o with { HandshakeTimeout = TimeSpan.FromSeconds(10), TimeProvider = time }, new MemoryExport("disk", MiB));
        try
        {
            await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            Assert.Equal(TimeSpan.FromSeconds(10), await time.NextArmedAsync());
            // Many options whose replies go unread, STARTTLS, then more than the receive pipe holds, all before any reply.
            var burst = new List<byte>();
            for (var i = 0; i < 60_000; i++) burst.AddRange(OptionHeader(RawNbdClient.OptList, 0));
            burst.AddRange(OptionHeader(RawNbdClient.OptStartTls, 0));
            burst.AddRange(new byte[2 * MiB]);
            var sending = c.WriteAsync([.. burst]); // may never finish: the client never reads

            time.Advance(TimeSpan.FromSeconds(10));
            Assert.True(await c.WaitForCloseAsync(10_000), "the connection outlived the handshake timeout");
            try { await sending; } catch (IOException) { } // cut off mid-send, or all sent before the close: either way it ended
        }
        finally
        {
            await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            await server.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_tenant_lists_only_its_own_and_shared_exports_and_another_tenants_answers_as_missing()
    {
        await using var server = await StartAsync(NbdTlsMode.Required, Tenanted, TenantExports());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.StartTlsAsync(Pki.AcmeClient, Pki.Authority);
        Assert.Equal(["acme-disk", "shared"], Names(await c.OptionAsync(RawNbdClient.OptList, [])));

        foreach (var option in new[] { RawNbdClient.OptInfo, RawNbdClient.OptGo })
        {
            var hidden = (await c.OptionAsync(option, RawNbdClient.InfoRequest("globex-disk"))).Single();
            var missing = (await c.OptionAsync(option, RawNbdClient.InfoRequest("no-such-disk"))).Single();
            Assert.Equal(RawNbdClient.RepErrUnknown, hidden.Type);
            Assert.Equal(missing.Type, hidden.Type);
            Assert.Equal(Encoding.UTF8.GetString(missing.Data).Replace("no-such-disk", "globex-disk"), Encoding.UTF8.GetString(hidden.Data));
        }
        Assert.Equal(RawNbdClient.RepAck, (await c.OptionAsync(RawNbdClient.OptStructuredReply, [])).Single().Type);
        foreach (var option in new[] { RawNbdClient.OptListMeta, RawNbdClient.OptSetMeta })
        {
            Assert.Equal(RawNbdClient.RepErrUnknown, (await c.OptionAsync(option, RawNbdClient.MetaRequest("globex-disk", "base:allocation"))).Single().Type);
            Assert.Equal(RawNbdClient.RepMetaContext, (await c.OptionAsync(option, RawNbdClient.MetaRequest("acme-disk", "base:allocation")))[0].Type);
        }
        // EXPORT_NAME cannot answer "unknown": the connection ends, as for a name nobody serves.
        await c.SendOptionAsync(RawNbdClient.OptExportName, Encoding.UTF8.GetBytes("globex-disk"));
        Assert.True(await c.WaitForCloseAsync());
    }

    [Fact]
    public async Task A_tenant_enters_its_own_export_and_the_default_export_is_the_first_it_may_see()
    {
        await using var server = await StartAsync(NbdTlsMode.Required, Tenanted, TenantExports());
        await using (var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await c.StartTlsAsync(Pki.GlobexClient, Pki.Authority);
            var info = await c.OptionAsync(RawNbdClient.OptInfo, RawNbdClient.InfoRequest("", 1));
            var name = info.Single(r => r.Type == RawNbdClient.RepInfo && BinaryPrimitives.ReadUInt16BigEndian(r.Data) == 1).Data;
            Assert.Equal("globex-disk", Encoding.UTF8.GetString(name, 2, name.Length - 2));
            await c.GoAsync("globex-disk");
        }
    }

    [Fact]
    public async Task A_plain_text_client_of_a_tenanted_server_sees_only_shared_exports()
    {
        await using var server = await StartAsync(NbdTlsMode.Optional, Tenanted, TenantExports());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        Assert.Equal(["shared"], Names(await c.OptionAsync(RawNbdClient.OptList, [])));
        Assert.Equal(RawNbdClient.RepErrUnknown, (await c.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("acme-disk"))).Single().Type);
    }

    [Fact]
    public async Task Disconnecting_a_tenant_closes_its_clients_still_negotiating_and_spares_the_others()
    {
        await using var server = await StartAsync(NbdTlsMode.Required, Tenanted, TenantExports());
        await using var acme = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await acme.StartTlsAsync(Pki.AcmeClient, Pki.Authority);
        await acme.OptionAsync(RawNbdClient.OptList, []); // its tenant is resolved by now
        await using var globex = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await globex.StartTlsAsync(Pki.GlobexClient, Pki.Authority);
        await globex.OptionAsync(RawNbdClient.OptList, []);

        Assert.Equal(1, await server.DisconnectTenantAsync("acme"));
        Assert.True(await acme.WaitForCloseAsync());
        Assert.Equal(["globex-disk", "shared"], Names(await globex.OptionAsync(RawNbdClient.OptList, [])));
    }

    [Fact]
    public void A_server_offering_tls_without_credentials_is_refused()
    {
        var options = NbdServerOptions.Tcp([new MemoryExport("disk", MiB)], port: 0) with { TlsMode = NbdTlsMode.Required };
        Assert.Contains("TlsCredentials", Assert.Throws<ArgumentException>(() => new NbdServer(options)).Message);
    }
}
