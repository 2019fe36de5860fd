using System.Net;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Auth;

/// <summary>The control socket admits callers by their uid (SO_PEERCRED), and every change and refusal is audited.</summary>
public class ControlSocketAuthTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public async Task The_socket_admits_the_hosts_own_uid_and_audits_each_change_with_who_what_when_and_result()
    {
        using var dir = new TempDir();
        var uid = ControlSocket.EffectiveUserId();
        await using var host = await HostHarness.StartAsync(dir.Path,
            services: s => s.Replace(ServiceDescriptor.Singleton<TimeProvider>(new FakeTimeProvider(Now))));

        await host.GetAsync<HealthReply>(Routes.Health); // a read: not audited
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.TenantPath("nobody")), HttpStatusCode.NotFound);

        var lines = host.AuditLines();
        Assert.Equal(2, lines.Count);
        Assert.Equal(Now, lines[0].GetProperty("time").GetDateTimeOffset());
        Assert.Equal($"uid:{uid}", lines[0].GetProperty("who").GetString());
        Assert.Equal("POST", lines[0].GetProperty("method").GetString());
        Assert.Equal(Routes.Tenants, lines[0].GetProperty("route").GetString());
        Assert.Equal(201, lines[0].GetProperty("status").GetInt32());
        Assert.Equal(Routes.Tenant, lines[1].GetProperty("route").GetString());
        Assert.Equal("/v1/tenants/nobody", lines[1].GetProperty("target").GetString());
        Assert.Equal(404, lines[1].GetProperty("status").GetInt32());
        Assert.Equal(ErrorCodes.TenantNotFound, lines[1].GetProperty("code").GetString());
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(host.DataDir, "audit.log")));
    }

    [Fact]
    public async Task A_uid_not_in_allowed_uids_gets_403_forbidden_and_an_audit_line()
    {
        using var dir = new TempDir();
        var other = ControlSocket.EffectiveUserId() + 4242;
        await using var host = await HostHarness.StartAsync(dir.Path, $"qcow2actors.host.control.allowed-uids = [{other}]");

        var refused = await HostHarness.ErrorAsync(host.Client.GetAsync(Routes.Tenants), HttpStatusCode.Forbidden);

        Assert.Equal(ErrorCodes.Forbidden, refused.Code);
        Assert.Contains($"uid {ControlSocket.EffectiveUserId()} ", refused.Message);
        var line = Assert.Single(host.AuditLines());
        Assert.Equal($"uid:{ControlSocket.EffectiveUserId()}", line.GetProperty("who").GetString());
        Assert.Equal(403, line.GetProperty("status").GetInt32());
        Assert.Equal(ErrorCodes.Forbidden, line.GetProperty("code").GetString());
    }

    [Fact]
    public void A_control_port_without_tls_refuses_to_start_naming_the_missing_key()
    {
        using var dir = new TempDir();
        var error = Assert.Throws<ArgumentException>(() => HostSettings.Load(null, dataDir: dir.Path, controlPort: 9999));
        Assert.StartsWith("qcow2actors.host.control.tls.cert is not set", error.Message);

        var config = dir.File("host.conf");
        File.WriteAllText(config, $"qcow2actors.host.control.tls.cert = \"{config}\"");
        error = Assert.Throws<ArgumentException>(() => HostSettings.Load(config, dataDir: dir.Path, controlPort: 9999));
        Assert.StartsWith("qcow2actors.host.control.tls.key is not set", error.Message);
        Assert.DoesNotContain("\n", error.Message);
    }

    [Fact]
    public async Task The_openapi_document_names_the_bearer_scheme()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        using var document = JsonDocument.Parse(await host.Client.GetStringAsync("/openapi/v1.json"));
        var scheme = document.RootElement.GetProperty("components").GetProperty("securitySchemes").GetProperty("bearer");
        Assert.Equal("http", scheme.GetProperty("type").GetString());
        Assert.Equal("bearer", scheme.GetProperty("scheme").GetString());
        Assert.True(document.RootElement.GetProperty("paths").TryGetProperty(Routes.TenantTokens, out _));
    }
}
