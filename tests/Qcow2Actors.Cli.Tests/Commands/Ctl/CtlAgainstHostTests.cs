using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Cli.Commands.Ctl;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Hosting;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests.Commands.Ctl;

/// <summary>A real <c>q2a host</c> in process (control socket and TCP port in a temp dir, NBD on a free port), shared by a class's tests.</summary>
public sealed class InProcessHost : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private WebApplication? _app;

    /// <summary>The control socket.</summary>
    public string Socket => _dir.File("control.sock");

    /// <summary>The control API's TCP port.</summary>
    public int ControlPort { get; } = FreePort();

    /// <summary>The data directory.</summary>
    public string DataDir => _dir.File("data");

    /// <summary>The control port's CA, server certificate and the operator's client certificate ("ops").</summary>
    public Host.Tests.Auth.TestCertificates Certificates { get; private set; } = null!;

    /// <summary>The file holding the operator's bearer token.</summary>
    public string TokenFile => _dir.File("ops.token");

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(DataDir);
        Certificates = new Host.Tests.Auth.TestCertificates(_dir.File("pki"));
        Certificates.Issue("ops", "CN=ops,O=Q2A Test");
        await File.WriteAllTextAsync(TokenFile, "ops-token-0123456789abcdef\n");
        var config = _dir.File("host.conf");
        await File.WriteAllTextAsync(config, Certificates.HostConfig($$"""
            operators.ops { subject = "CN=ops,O=Q2A Test", token-file = "{{TokenFile}}" }
            """));
        var settings = HostSettings.Load(config, DataDir, Socket, ControlPort, nbdPort: 0);
        _app = HostApplication.Build(settings, logging => logging.ClearProviders());
        await _app.StartAsync();
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        _dir.Dispose();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>
/// <c>q2a ctl</c> against a real host in process: every command reaches its route, human output is what the
/// formatters make of the host's reply, <c>--output json</c> is the reply itself, and the host's refusals are
/// one line <c>q2a ctl: MESSAGE (CODE)</c> with exit 1.
/// </summary>
public sealed class CtlAgainstHostTests(InProcessHost host) : IClassFixture<InProcessHost>
{
    private async Task<(int Exit, string Out, string Err)> RunAsync(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        var exit = await CtlCommand.RunAsync(["ctl", "--control", host.Socket, .. args], stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    private async Task<string> OkAsync(params string[] args)
    {
        var (exit, stdout, stderr) = await RunAsync(args);
        Assert.True(exit == 0, $"q2a ctl {string.Join(' ', args)}: exit {exit}: {stderr}");
        Assert.Equal("", stderr);
        return stdout;
    }

    private async Task<T> JsonAsync<T>(params string[] args) =>
        JsonSerializer.Deserialize<T>(await OkAsync(["--output", "json", .. args]), HostJson.Options)!;

    private async Task AssertRefusedAsync(string code, params string[] args)
    {
        var (exit, stdout, stderr) = await RunAsync(args);
        Assert.Equal(1, exit);
        Assert.Equal("", stdout);
        Assert.Matches($"^q2a ctl: [^\\n]+ \\({code}\\)\\r?\\n$", stderr);
    }

    [Fact]
    public async Task Tenants_are_added_listed_changed_and_removed()
    {
        Assert.Equal(
            "tenant: t-acme\nquota: 1 GiB (1073741824 bytes)\nused: 0 B (0 bytes)\nmax images: 3\nimages: 0\n",
            await OkAsync("tenant", "add", "t-acme", "--quota", "1G", "--max-images", "3"));
        await AssertRefusedAsync("tenant-exists", "tenant", "add", "t-acme");
        Assert.Matches(@"\nt-acme +1 GiB +0 B +3 +0\n", await OkAsync("tenant", "list"));

        var changed = await JsonAsync<TenantReply>("tenant", "set", "t-acme", "--quota", "512M");
        Assert.Equal(new TenantReply { Name = "t-acme", Quota = 512L << 20, MaxImages = 3, UsedBytes = 0, Images = 0 }, changed);
        Assert.Equal(changed, await JsonAsync<TenantReply>("tenant", "info", "t-acme"));

        Assert.Equal("", await OkAsync("tenant", "remove", "t-acme"));
        await AssertRefusedAsync("tenant-not-found", "tenant", "info", "t-acme");
        await AssertRefusedAsync("tenant-not-found", "--output", "json", "tenant", "remove", "t-acme");
    }

    [Fact]
    public async Task Images_are_created_listed_closed_opened_resized_checked_and_deleted()
    {
        await OkAsync("tenant", "add", "i-acme");
        var created = await JsonAsync<ImageReply>("image", "create", "i-acme", "disk", "64M", "-o", "cluster_size=4k");
        Assert.Equal((ImageState.Open, 64L << 20, Path.Combine(host.DataDir, "i-acme", "disk.qcow2")), (created.State, created.VirtualSize, created.Path));
        await AssertRefusedAsync("image-exists", "image", "create", "i-acme", "disk", "64M");
        await AssertRefusedAsync("tenant-not-found", "image", "create", "nobody", "disk", "64M");

        Assert.Matches(@"\ni-acme +disk +64 MiB +\S+ \S+ +open +-\n", await OkAsync("image", "list", "i-acme"));
        var info = await OkAsync("image", "info", "i-acme", "disk");
        Assert.Contains("virtual size: 64 MiB (67108864 bytes)\n", info);
        Assert.Contains("\n    cluster-size: 4096\n", info);

        Assert.Equal(ImageState.Closed, (await JsonAsync<ImageReply>("image", "close", "i-acme", "disk")).State);
        Assert.StartsWith("No errors were found on the image.\n", await OkAsync("image", "check", "i-acme", "disk"));
        Assert.Equal(0, (await JsonAsync<CheckReply>("image", "check", "i-acme", "disk")).Corruptions);
        Assert.Equal(ImageState.Open, (await JsonAsync<ImageReply>("image", "open", "i-acme", "disk")).State);
        Assert.Equal(128L << 20, (await JsonAsync<ImageReply>("image", "resize", "i-acme", "disk", "128M")).VirtualSize);

        Assert.Equal("", await OkAsync("image", "delete", "i-acme", "disk"));
        Assert.False(File.Exists(created.Path));
        await AssertRefusedAsync("image-not-found", "image", "info", "i-acme", "disk");
        await OkAsync("tenant", "remove", "i-acme");
    }

    [Fact]
    public async Task Exports_are_added_listed_and_removed_and_an_exported_image_does_not_close()
    {
        await OkAsync("tenant", "add", "e-acme");
        await OkAsync("image", "create", "e-acme", "disk", "16M");
        var added = await OkAsync("export", "add", "e-acme", "disk");
        Assert.StartsWith("export: e-acme/disk\ntenant: e-acme\nimage: disk\nread-only: no\nuri: nbd://", added);
        var ro = await JsonAsync<ExportReply>("export", "add", "e-acme", "disk", "--name", "e-ro", "--read-only");
        Assert.True(ro.ReadOnly);
        Assert.EndsWith("/e-ro", ro.Uri);
        await AssertRefusedAsync("export-exists", "export", "add", "e-acme", "disk", "--name", "e-ro");
        await AssertRefusedAsync("image-exported", "image", "close", "e-acme", "disk");

        var list = await OkAsync("export", "list");
        Assert.StartsWith("EXPORT ", list);
        Assert.Matches(@"\ne-acme/disk +e-acme +disk +rw +0 +ok +nbd://", list);
        Assert.Matches(@"\ne-ro +e-acme +disk +ro +0 +ok +nbd://", list);

        Assert.Equal("", await OkAsync("export", "remove", "e-acme/disk"));
        Assert.Equal("", await OkAsync("export", "remove", "e-ro"));
        await AssertRefusedAsync("export-not-found", "export", "remove", "e-ro");
        await OkAsync("image", "close", "e-acme", "disk");
        await OkAsync("image", "delete", "e-acme", "disk");
        await OkAsync("tenant", "remove", "e-acme");
    }

    [Fact]
    public async Task An_export_added_with_record_names_its_log_and_base_snapshot_and_a_used_log_name_is_refused()
    {
        await OkAsync("tenant", "add", "r-acme");
        await OkAsync("image", "create", "r-acme", "disk", "16M");
        var added = await OkAsync("export", "add", "r-acme", "disk", "--record", "run1.crashlog");
        Assert.Matches($"\nrecord: {System.Text.RegularExpressions.Regex.Escape(Path.Combine(host.DataDir, "r-acme", "run1.crashlog"))}\nrecord-snapshot: q2a-record-\\d{{8}}T\\d{{6}}Z\n", added);
        await OkAsync("export", "remove", "r-acme/disk");
        await AssertRefusedAsync("record-exists", "export", "add", "r-acme", "disk", "--record", "run1.crashlog");
        await AssertRefusedAsync("bad-request", "export", "add", "r-acme", "disk", "--record", "../elsewhere.crashlog");
        Assert.True(File.Exists(Path.Combine(host.DataDir, "r-acme", "run1.crashlog")));
    }

    [Fact]
    public async Task Limits_are_set_listed_and_cleared_for_a_tenant_and_an_export()
    {
        await OkAsync("tenant", "add", "l-acme");
        await OkAsync("image", "create", "l-acme", "disk", "16M");
        await OkAsync("export", "add", "l-acme", "disk");
        Assert.Equal("scope: tenant\ntarget: l-acme\niops: 1000\nbps: 10 MiB/s\n", await OkAsync("limit", "set", "--tenant", "l-acme", "--iops", "1000", "--bps", "10M"));
        var export = await JsonAsync<LimitReply>("limit", "set", "--export", "l-acme/disk", "--read-iops", "500", "--burst-iops", "800", "--burst-length", "3");
        Assert.Equal(new LimitReply { Scope = LimitScope.Export, Target = "l-acme/disk", ReadIops = 500, BurstIops = 800, BurstSeconds = 3 },
            export with { Iops = null, Bps = null, WriteIops = null, ReadBps = null, WriteBps = null, BurstBps = null });

        var list = await OkAsync("limit", "list");
        Assert.Matches(@"\ntenant +l-acme +1000 +10 MiB ", list);
        Assert.Matches(@"\nexport +l-acme/disk +- +- +500 ", list);

        Assert.Equal("", await OkAsync("limit", "clear", "--tenant", "l-acme"));
        Assert.Equal("", await OkAsync("limit", "clear", "--export", "l-acme/disk"));
        Assert.DoesNotContain("l-acme", await OkAsync("limit", "list"));
        await OkAsync("export", "remove", "l-acme/disk");
        await OkAsync("image", "close", "l-acme", "disk");
        await OkAsync("image", "delete", "l-acme", "disk");
        await OkAsync("tenant", "remove", "l-acme");
    }

    [Fact]
    public async Task Snapshots_of_an_open_image_are_created_listed_applied_and_deleted()
    {
        await OkAsync("tenant", "add", "s-acme");
        await OkAsync("image", "create", "s-acme", "disk", "16M");
        var created = await OkAsync("snapshot", "create", "s-acme", "disk", "first");
        Assert.StartsWith("Snapshot list:\nID        TAG ", created);
        Assert.Contains(" first ", created);
        await AssertRefusedAsync("snapshot-exists", "snapshot", "create", "s-acme", "disk", "first");
        var listed = await JsonAsync<SnapshotReply[]>("snapshot", "list", "s-acme", "disk");
        Assert.Equal("first", Assert.Single(listed).Name);
        Assert.Contains(" first ", await OkAsync("snapshot", "apply", "s-acme", "disk", "first"));
        Assert.Equal("", await OkAsync("snapshot", "delete", "s-acme", "disk", "first"));
        Assert.Equal("", await OkAsync("snapshot", "list", "s-acme", "disk"));
        await AssertRefusedAsync("snapshot-not-found", "snapshot", "delete", "s-acme", "disk", "first");
        await OkAsync("image", "delete", "s-acme", "disk");
        await OkAsync("tenant", "remove", "s-acme");
    }

    [Fact]
    public async Task Health_metrics_and_the_openapi_document_answer()
    {
        var health = await JsonAsync<HealthReply>("health");
        Assert.Equal(HealthStatus.Ok, health.Status);
        Assert.StartsWith("status: ok\ntenants: ", await OkAsync("health"));
        Assert.Contains("# TYPE ", await OkAsync("metrics"));
        using var openApi = JsonDocument.Parse(await OkAsync("openapi"));
        Assert.True(openApi.RootElement.GetProperty("paths").TryGetProperty("/v1/tenants", out _));
    }

    [Fact]
    public async Task The_tcp_control_port_serves_the_same_api_over_tls_to_an_operator_token_or_certificate()
    {
        var port = host.ControlPort.ToString(CultureInfo.InvariantCulture);
        var ca = host.Certificates.CaFile;
        string[] byToken = ["--cacert", ca, "--token-file", host.TokenFile];
        string[] byCertificate = ["--cacert", ca, "--cert", host.Certificates.CertFile("ops"), "--key", host.Certificates.KeyFile("ops")];
        foreach (string[] control in (string[][])[["--control-port", port, .. byToken], ["--control", $"127.0.0.1:{port}", .. byCertificate],
            ["--control-url", $"https://127.0.0.1:{port}", .. byToken]])
        {
            var (stdout, stderr) = (new StringWriter(), new StringWriter());
            var exit = await CtlCommand.RunAsync(["ctl", .. control, "health"], stdout, stderr);
            Assert.True(exit == 0, stderr.ToString());
            Assert.StartsWith("status: ok\n", stdout.ToString());
        }
        var (exit2, _, stderr2) = await RunBareAsync("--control-port", port, "--cacert", ca, "health");
        Assert.Equal(1, exit2);
        Assert.Equal("q2a ctl: no credentials: give an Authorization: Bearer token or a client certificate (unauthorized)\n", stderr2);
    }

    private static async Task<(int Exit, string Out, string Err)> RunBareAsync(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        var exit = await CtlCommand.RunAsync(["ctl", .. args], stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Tokens_are_created_listed_and_revoked_and_a_tenant_is_revoked_and_restored()
    {
        await OkAsync("tenant", "add", "k-acme");
        var token = await JsonAsync<TokenReply>("token", "create", "k-acme");
        Assert.StartsWith("q2a_", token.Token);
        Assert.Matches($@"^ID +TENANT +CREATED\n{token.Id} +k-acme +\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$", await OkAsync("token", "list", "k-acme"));

        // The token acts as the tenant: its own images yes, host administration no (the host's line, exit 1).
        await OkAsync("--token", token.Token!, "image", "list", "k-acme");
        await AssertRefusedAsync("forbidden", "--token", token.Token!, "tenant", "add", "k-other");
        await AssertRefusedAsync("tenant-not-found", "--token", token.Token!, "image", "list", "no-such-tenant");

        Assert.Contains("revoked: yes\n", await OkAsync("tenant", "revoke", "k-acme"));
        await AssertRefusedAsync("forbidden", "--token", token.Token!, "image", "list", "k-acme");
        Assert.DoesNotContain("revoked", await OkAsync("tenant", "restore", "k-acme"));
        Assert.Equal("", await OkAsync("token", "revoke", "k-acme", token.Id));
        await AssertRefusedAsync("unauthorized", "--token", token.Token!, "image", "list", "k-acme");
        await AssertRefusedAsync("token-not-found", "token", "revoke", "k-acme", token.Id);
        await OkAsync("tenant", "remove", "k-acme");
    }
}
