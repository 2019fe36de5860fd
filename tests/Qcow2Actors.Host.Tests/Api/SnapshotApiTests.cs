using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Api;

public class SnapshotApiTests
{
    [QemuFact]
    public async Task Snapshots_of_a_served_image_are_taken_applied_and_deleted_and_qemu_img_agrees_after_stop()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "vm", Size = 8 << 20 });
        var export = await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "vm" });
        Assert.Equal(0, QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 0xa1 0 1M").ExitCode);

        var before = await host.PostAsync<SnapshotReply>(Routes.SnapshotPath("acme", "vm"), new SnapshotCreateRequest { Name = "before" });
        await host.PostAsync<SnapshotReply>(Routes.SnapshotPath("acme", "vm"), new SnapshotCreateRequest { Name = "scratch" });
        Assert.Equal(0, QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 0xb2 0 1M").ExitCode);
        var applied = await host.PostAsync<SnapshotReply>(Routes.SnapshotPath("acme", "vm", "before", apply: true));
        using var deleted = await host.Client.DeleteAsync(Routes.SnapshotPath("acme", "vm", "scratch"));
        var list = await host.GetAsync<SnapshotReply[]>(Routes.SnapshotPath("acme", "vm"));

        Assert.Equal("before", before.Name);
        Assert.Equal(before.Id, applied.Id);
        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        Assert.Equal(["before"], list.Select(s => s.Name));
        var read = QemuTools.QemuIo("-f", "raw", "-r", export.Uri, "-c", "read -P 0xa1 0 1M");
        Assert.True(read.ExitCode == 0, read.StdErr + read.StdOut);
        var exists = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.SnapshotPath("acme", "vm"), new SnapshotCreateRequest { Name = "before" }, HostJson.Options), HttpStatusCode.Conflict);
        var missing = await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.SnapshotPath("acme", "vm", "nope")), HttpStatusCode.NotFound);
        Assert.Equal(ErrorCodes.SnapshotExists, exists.Code);
        Assert.Equal(ErrorCodes.SnapshotNotFound, missing.Code);

        Assert.True(await host.StopAsync());
        QemuTools.AssertCheckClean(host.ImagePath("acme", "vm"));
        var snapshots = QemuTools.QemuImg("snapshot", "-l", host.ImagePath("acme", "vm"));
        Assert.Contains("before", snapshots.StdOut);
        Assert.DoesNotContain("scratch", snapshots.StdOut);
    }
}
