using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Hosting;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Hosting;

public class HostLifecycleTests
{
    [QemuFact]
    public async Task Tenants_images_and_exports_come_back_after_a_restart()
    {
        using var dir = new TempDir();
        await using (var first = await HostHarness.StartAsync(dir.Path))
        {
            await first.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme", Quota = 1L << 30, MaxImages = 4 });
            await first.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "served", Size = 8 << 20 });
            await first.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "parked", Size = 8 << 20 });
            await first.PostAsync<ImageReply>(Routes.ImagePath("acme", "parked", "close"));
            var export = await first.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "served", Name = "vm/root" });
            var write = QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 0x33 0 1M");
            Assert.True(write.ExitCode == 0, write.StdErr + write.StdOut);
            Assert.True(await first.StopAsync());
        }
        QemuTools.AssertCheckClean(Path.Combine(dir.Path, "data", "acme", "served.qcow2"));
        QemuTools.AssertCheckClean(Path.Combine(dir.Path, "data", "acme", "parked.qcow2"));

        await using var second = await HostHarness.StartAsync(dir.Path);

        var tenant = await second.GetAsync<TenantReply>(Routes.TenantPath("acme"));
        Assert.Equal((1L << 30, 4, 2), (tenant.Quota!.Value, tenant.MaxImages!.Value, tenant.Images));
        var images = await second.GetAsync<ImageReply[]>(Routes.ImagesPath());
        Assert.Equal([("parked", ImageState.Closed), ("served", ImageState.Open)], images.Select(i => (i.Name, i.State)));
        var exports = await second.GetAsync<ExportReply[]>(Routes.Exports);
        Assert.Equal("vm/root", Assert.Single(exports).Name);
        var read = QemuTools.QemuIo("-f", "raw", "-r", exports[0].Uri, "-c", "read -P 0x33 0 1M");
        Assert.True(read.ExitCode == 0, read.StdErr + read.StdOut);
    }

    [Fact]
    public async Task An_image_missing_for_one_start_gets_its_export_and_limit_back_at_the_next()
    {
        using var dir = new TempDir();
        var path = Path.Combine(dir.Path, "data", "acme", "disk.qcow2");
        await using (var first = await HostHarness.StartAsync(dir.Path))
        {
            await first.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
            await first.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 8 << 20 });
            await first.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "vm" });
            using (var put = await first.Client.PutAsJsonAsync(Routes.ExportLimitPath("vm"), new LimitRequest { Iops = 500 }, HostJson.Options))
                Assert.Equal(System.Net.HttpStatusCode.OK, put.StatusCode);
            Assert.True(await first.StopAsync());
        }
        File.Move(path, path + ".away");
        await using (var second = await HostHarness.StartAsync(dir.Path))
        {
            Assert.Equal(ImageState.Failed, (await second.GetAsync<ImageReply>(Routes.ImagePath("acme", "disk"))).State);
            Assert.Empty(await second.GetAsync<ExportReply[]>(Routes.Exports));
            await second.StopAsync();
        }
        File.Move(path + ".away", path);

        await using var third = await HostHarness.StartAsync(dir.Path);

        Assert.Equal(ImageState.Open, (await third.GetAsync<ImageReply>(Routes.ImagePath("acme", "disk"))).State);
        Assert.Equal("vm", Assert.Single(await third.GetAsync<ExportReply[]>(Routes.Exports)).Name);
        var limit = Assert.Single(await third.GetAsync<LimitReply[]>(Routes.Limits));
        Assert.Equal(("vm", 500L), (limit.Target, limit.Iops!.Value));
    }

    [Fact]
    public async Task An_image_whose_file_vanished_is_failed_with_its_reason_and_health_is_degraded()
    {
        using var dir = new TempDir();
        await using (var first = await HostHarness.StartAsync(dir.Path))
        {
            await first.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
            await first.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "gone", Size = 1 << 20 });
            await first.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "fine", Size = 1 << 20 });
            Assert.Equal(HealthStatus.Ok, (await first.GetAsync<HealthReply>(Routes.Health)).Status);
            Assert.True(await first.StopAsync());
            File.Delete(first.ImagePath("acme", "gone"));
        }

        await using var second = await HostHarness.StartAsync(dir.Path);

        var health = await second.GetAsync<HealthReply>(Routes.Health);
        Assert.Equal(HealthStatus.Degraded, health.Status);
        Assert.Equal(["acme/gone"], health.FailedImages);
        Assert.Equal((1, 2, 1), (health.Tenants, health.Images, health.OpenImages));
        var gone = await second.GetAsync<ImageReply>(Routes.ImagePath("acme", "gone"));
        Assert.Equal(ImageState.Failed, gone.State);
        Assert.Contains("missing", gone.Reason);
        var refused = await HostHarness.ErrorAsync(second.Client.PostAsJsonAsync(Routes.Exports,
            new ExportAddRequest { Tenant = "acme", Image = "gone" }, HostJson.Options), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.ImageFailed, refused.Code);
    }

    [Fact]
    public async Task The_state_file_is_replaced_whole_and_names_what_the_API_changed()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme", Quota = 12345 });

        var state = await File.ReadAllTextAsync(Path.Combine(host.DataDir, "host-state.json"));

        Assert.Contains("\"acme\"", state);
        Assert.Contains("12345", state);
        Assert.False(File.Exists(Path.Combine(host.DataDir, "host-state.json.tmp")));
    }

    [Fact]
    public async Task The_OpenAPI_document_and_Prometheus_metrics_are_served_on_the_control_socket()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme", Quota = 1 << 30 });

        var openApi = await host.Client.GetStringAsync(Routes.OpenApi);
        using var metrics = await host.Client.GetAsync(Routes.Metrics);
        var text = await metrics.Content.ReadAsStringAsync();

        Assert.Contains("\"openapi\"", openApi);
        Assert.Contains("/v1/tenants/{tenant}/images/{image}/snapshots", openApi);
        Assert.Contains("TenantCreateRequest", openApi);
        Assert.StartsWith("text/plain", metrics.Content.Headers.ContentType!.MediaType);
        Assert.Contains("qcow2actors_host_tenants", text);
        Assert.Contains(text.Split('\n'), line => line.StartsWith("qcow2actors_host_quota_limit_bytes{", StringComparison.Ordinal)
            && line.Contains("tenant=\"acme\"") && line.EndsWith(" 1073741824", StringComparison.Ordinal));
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task The_control_socket_is_owner_only_a_stale_one_is_replaced_and_a_live_one_refuses_a_second_host()
    {
        using var dir = new TempDir();
        var socket = Path.Combine(dir.Path, "control.sock");
        // Bound, never listening: connecting is refused, as on the file a dead host left (kept open, since
        // .NET removes the file when it disposes a socket it bound).
        using var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        stale.Bind(new UnixDomainSocketEndPoint(socket));
        Assert.True(File.Exists(socket));

        await using var host = await HostHarness.StartAsync(dir.Path);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(socket));
        Assert.Equal(HealthStatus.Ok, (await host.GetAsync<HealthReply>(Routes.Health)).Status);

        var settings = HostSettings.Load(null, dataDir: Path.Combine(dir.Path, "other"), controlSocket: socket, nbdPort: 0);
        var refused = Assert.Throws<InvalidOperationException>(() => HostApplication.Build(settings));
        Assert.Equal($"another q2a host is listening on control socket '{socket}'", refused.Message);
    }

    [Fact]
    public async Task A_reload_applies_the_config_file_tenants_quota_and_image_limit_without_a_restart()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path, "qcow2actors.host.tenants { acme { quota = 1GiB, max-images = 2 } }");
        var before = await host.GetAsync<TenantReply>(Routes.TenantPath("acme"));
        Assert.Equal((1L << 30, 2), (before.Quota!.Value, before.MaxImages!.Value));

        var conf = Path.Combine(dir.Path, "host.conf");
        await File.WriteAllTextAsync(conf, "qcow2actors.host.tenants {\n  acme { quota = 2GiB, max-images = 5 }\n  globex { quota = 1MiB }\n}");
        Assert.Equal(2, HostSettings.ReadTenants(HostSettings.ReadConfig(conf)).Count);
        var settings = host.App.Services.GetRequiredService<HostSettings>();
        await HostApplication.ReloadAsync(settings, host.Registry, NullLogger.Instance);

        var after = await host.GetAsync<TenantReply>(Routes.TenantPath("acme"));
        Assert.Equal((2L << 30, 5), (after.Quota!.Value, after.MaxImages!.Value));
        Assert.Equal(1L << 20, (await host.GetAsync<TenantReply>(Routes.TenantPath("globex"))).Quota);
    }

    [Fact]
    public void Bad_settings_are_one_line_naming_the_key_or_option()
    {
        using var dir = new TempDir();
        var conf = Path.Combine(dir.Path, "bad.conf");
        File.WriteAllText(conf, "qcow2actors.host { log-format = yaml }");

        Assert.Equal("no data directory: give --data-dir DIR or qcow2actors.host.data-dir",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(null)).Message);
        Assert.Equal("qcow2actors.host.log-format 'yaml' is invalid (text or json)",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(conf, dataDir: dir.Path)).Message);
        Assert.Equal("--port and --socket cannot be combined",
            Assert.Throws<ArgumentException>(() => HostSettings.Load(null, dataDir: dir.Path, nbdPort: 1, nbdSocket: "/tmp/x")).Message);
        Assert.StartsWith("cannot read config file", Assert.Throws<ArgumentException>(() => HostSettings.Load(Path.Combine(dir.Path, "none.conf"), dataDir: dir.Path)).Message);
    }
}
