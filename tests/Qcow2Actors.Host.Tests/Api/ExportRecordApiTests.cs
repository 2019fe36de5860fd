using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.CrashLab.Tests.Recording;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Api;

/// <summary>
/// An export that records its guest's changes for the crash lab (<c>record</c> of export-add): the log lands in the
/// tenant's directory, starts from a base snapshot, closes complete when the export goes; a tenant cannot point it
/// elsewhere, and nothing may change the image behind the log while it runs.
/// </summary>
public class ExportRecordApiTests
{
    [QemuFact]
    public async Task A_recording_export_logs_the_guests_writes_and_flushes_into_the_tenants_directory_until_it_is_removed()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 16 << 20 });

        var export = await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk", Record = "run1.crashlog" });
        var log = Path.Combine(host.DataDir, "acme", "run1.crashlog");
        Assert.Equal(log, export.Record);
        Assert.StartsWith("q2a-record-", export.RecordSnapshot);
        var snapshots = await host.GetAsync<SnapshotReply[]>(Routes.SnapshotPath("acme", "disk"));
        Assert.Equal([export.RecordSnapshot], snapshots.Select(s => s.Name));

        // -t writeback: qemu-io's default (writethrough) would send every write with FUA.
        QemuTools.QemuIo("-t", "writeback", "-f", "raw", export.Uri, "-c", "write -P 0x5a 0 64k", "-c", "flush", "-c", "write -f -P 0x6b 1M 4k").EnsureSuccess();

        // While it records: no other writable export, no resize, no apply, the base stays.
        var second = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.Exports,
            new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "other" }, HostJson.Options), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.ImageInUse, second.Code);
        Assert.Contains("is recording it into", second.Message);
        await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "reader", ReadOnly = true });
        var resize = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.ImagePath("acme", "disk", "resize"),
            new ResizeRequest { Size = 32 << 20 }, HostJson.Options), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.ImageInUse, resize.Code);
        await host.PostAsync<SnapshotReply>(Routes.SnapshotPath("acme", "disk"), new SnapshotCreateRequest { Name = "later" });
        var apply = await HostHarness.ErrorAsync(host.Client.PostAsync(Routes.SnapshotPath("acme", "disk", "later", apply: true), null), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.ImageInUse, apply.Code);
        var deleteBase = await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.SnapshotPath("acme", "disk", export.RecordSnapshot!)), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.ImageInUse, deleteBase.Code);

        using (var removed = await host.Client.DeleteAsync(Routes.ExportPath(export.Name))) Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);

        var read = CrashLogTestReader.Read(log);
        Assert.Equal(host.ImagePath("acme", "disk"), read.ImagePath);
        Assert.Equal(export.RecordSnapshot, read.BaseSnapshot);
        Assert.Equal(16 << 20, read.VirtualSize);
        Assert.False(read.Truncated);
        // qemu-io flushes once more as it closes.
        Assert.Equal(["write 0+65536 ok", "flush ok", "write 1048576+4096 fua ok", "flush ok"], read.Operations);

        // The same name again is never overwritten, and the image may be resized again.
        var again = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.Exports,
            new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "again", Record = "run1.crashlog" }, HostJson.Options), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.RecordExists, again.Code);
        Assert.Contains(log, again.Message);
        using (var removed = await host.Client.DeleteAsync(Routes.ExportPath("reader"))) Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);
        using (var resized = await host.Client.PostAsJsonAsync(Routes.ImagePath("acme", "disk", "resize"), new ResizeRequest { Size = 32 << 20 }, HostJson.Options))
            Assert.Equal(HttpStatusCode.OK, resized.StatusCode);
        Assert.True(await host.StopAsync());
        QemuTools.AssertCheckClean(host.ImagePath("acme", "disk"));
    }

    [Fact]
    public async Task A_tenant_records_only_into_a_file_name_of_its_own_directory()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 1 << 20 });
        var token = (await host.PostAsync<TokenReply>(Routes.TenantTokensPath("acme"), new { })).Token!;
        using var acme = host.ClientWithToken(token);
        var outside = Path.Combine(dir.Path, "outside.crashlog");

        foreach (var record in new[] { outside, "../globex/x.crashlog", "sub/x.crashlog", "..", ".hidden", "disk.qcow2", "disk.qcow2.journal" })
        {
            var refused = await HostHarness.ErrorAsync(acme.PostAsJsonAsync(Routes.Exports,
                new ExportAddRequest { Tenant = "acme", Image = "disk", Record = record }, HostJson.Options), HttpStatusCode.BadRequest);
            Assert.Equal(ErrorCodes.BadRequest, refused.Code);
            Assert.StartsWith("record", refused.Message);
        }
        Assert.False(File.Exists(outside));
        Assert.Empty(await host.GetAsync<ExportReply[]>(Routes.Exports));
        Assert.Empty(await host.GetAsync<SnapshotReply[]>(Routes.SnapshotPath("acme", "disk")));

        var readOnly = await HostHarness.ErrorAsync(acme.PostAsJsonAsync(Routes.Exports,
            new ExportAddRequest { Tenant = "acme", Image = "disk", ReadOnly = true, Record = "ro.crashlog" }, HostJson.Options), HttpStatusCode.BadRequest);
        Assert.Contains("read-only", readOnly.Message);

        // An operator may put the log anywhere the host can write.
        var export = await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk", Record = outside });
        Assert.Equal(outside, export.Record);
        Assert.True(File.Exists(outside));
    }

    [Fact]
    public async Task After_a_restart_the_export_is_served_again_without_recording_and_the_log_is_complete()
    {
        using var dir = new TempDir();
        string log;
        await using (var host = await HostHarness.StartAsync(dir.Path))
        {
            await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
            await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 1 << 20 });
            log = (await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk", Record = "r.crashlog" })).Record!;
            Assert.True(await host.StopAsync());
        }
        Assert.False(CrashLogTestReader.Read(log).Truncated);
        await using (var host = await HostHarness.StartAsync(dir.Path))
        {
            var export = Assert.Single(await host.GetAsync<ExportReply[]>(Routes.Exports));
            Assert.Null(export.Record);
            Assert.False(export.ReadOnly);
        }
    }
}
