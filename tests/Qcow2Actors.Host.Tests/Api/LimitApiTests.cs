using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Api;

public class LimitApiTests
{
    [QemuFact]
    public async Task Limits_are_set_listed_applied_to_the_served_export_kept_across_a_restart_and_cleared()
    {
        using var dir = new TempDir();
        await using (var host = await HostHarness.StartAsync(dir.Path))
        {
            await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
            await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 4 << 20 });
            var export = await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk" });

            using var tenantLimit = await host.Client.PutAsJsonAsync(Routes.TenantLimitPath("acme"), new LimitRequest { Iops = 5000, BurstIops = 10000, BurstSeconds = 2 }, HostJson.Options);
            using var exportLimit = await host.Client.PutAsJsonAsync(Routes.ExportLimitPath("acme/disk"), new LimitRequest { Bps = 64 << 20 }, HostJson.Options);
            tenantLimit.EnsureSuccessStatusCode();
            exportLimit.EnsureSuccessStatusCode();

            var served = host.Registry.Exports.Single().Served;
            Assert.Equal(["tenant:acme", "export:acme/disk"], served.Groups.Select(g => g.Name));
            Assert.Equal(5000, served.Groups[0].Limits.Iops);
            var write = QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 0x42 0 1M");
            Assert.True(write.ExitCode == 0, write.StdErr + write.StdOut);
        }

        await using var again = await HostHarness.StartAsync(dir.Path);
        var limits = await again.GetAsync<LimitReply[]>(Routes.Limits);
        Assert.Equal([(LimitScope.Tenant, "acme", 5000L, 0L), (LimitScope.Export, "acme/disk", 0L, 64L << 20)],
            limits.Select(l => (l.Scope, l.Target, l.Iops ?? 0, l.Bps ?? 0)));
        Assert.Equal(2, again.Registry.Exports.Single().Served.Groups.Count);

        using var clear = await again.Client.DeleteAsync(Routes.TenantLimitPath("acme"));
        Assert.Equal(HttpStatusCode.NoContent, clear.StatusCode);
        Assert.Equal(["export:acme/disk"], again.Registry.Exports.Single().Served.Groups.Select(g => g.Name));
    }

    [Fact]
    public async Task Limits_QEMU_refuses_are_bad_requests_and_unknown_targets_not_found()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });

        var combined = await HostHarness.ErrorAsync(host.Client.PutAsJsonAsync(Routes.TenantLimitPath("acme"), new LimitRequest { Iops = 10, ReadIops = 5 }, HostJson.Options), HttpStatusCode.BadRequest);
        var negative = await HostHarness.ErrorAsync(host.Client.PutAsJsonAsync(Routes.TenantLimitPath("acme"), new LimitRequest { Bps = -1 }, HostJson.Options), HttpStatusCode.BadRequest);
        var noExport = await HostHarness.ErrorAsync(host.Client.PutAsJsonAsync(Routes.ExportLimitPath("acme/x"), new LimitRequest { Iops = 10 }, HostJson.Options), HttpStatusCode.NotFound);
        var noTenant = await HostHarness.ErrorAsync(host.Client.PutAsJsonAsync(Routes.TenantLimitPath("nobody"), new LimitRequest { Iops = 10 }, HostJson.Options), HttpStatusCode.NotFound);

        Assert.Equal(ErrorCodes.BadRequest, combined.Code);
        Assert.Contains("iops cannot be combined", combined.Message);
        Assert.Contains("bps", negative.Message);
        Assert.Equal(ErrorCodes.ExportNotFound, noExport.Code);
        Assert.Equal(ErrorCodes.TenantNotFound, noTenant.Code);
        Assert.Empty(await host.GetAsync<LimitReply[]>(Routes.Limits));
    }
}
