using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Nbd.Tests;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Api;

public class ExportApiTests
{
    private static async Task<HostHarness> WithImageAsync(TempDir dir)
    {
        var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk1", Size = 16 << 20 });
        return host;
    }

    [QemuFact]
    public async Task An_export_added_through_the_API_serves_qemu_io_and_the_image_is_check_clean_after_stop()
    {
        using var dir = new TempDir();
        await using var host = await WithImageAsync(dir);

        var export = await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk1" });
        Assert.Equal("acme/disk1", export.Name);
        Assert.StartsWith("nbd://127.0.0.1:", export.Uri);
        Assert.EndsWith("/acme/disk1", export.Uri);
        Assert.Equal(ExportState.Ok, export.State);

        var write = QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 0x5a 1M 2M", "-c", "flush");
        Assert.True(write.ExitCode == 0, write.StdErr + write.StdOut);
        var read = QemuTools.QemuIo("-f", "raw", "-r", export.Uri, "-c", "read -P 0x5a 1M 2M");
        Assert.True(read.ExitCode == 0, read.StdErr + read.StdOut);
        Assert.Equal(["acme/disk1"], (await host.GetAsync<ImageReply>(Routes.ImagePath("acme", "disk1"))).Exports);

        Assert.True(await host.StopAsync());
        QemuTools.AssertCheckClean(host.ImagePath("acme", "disk1"));
        var after = QemuTools.QemuIo("-f", "qcow2", "-r", host.ImagePath("acme", "disk1"), "-c", "read -P 0x5a 1M 2M");
        Assert.True(after.ExitCode == 0, after.StdErr + after.StdOut);
    }

    [Fact]
    public async Task Removing_an_export_disconnects_its_client_and_leaves_the_image_open()
    {
        using var dir = new TempDir();
        await using var host = await WithImageAsync(dir);
        await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk1", Name = "vm1-root", ReadOnly = true });
        await using var client = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
        var (size, flags) = await client.GoAsync("vm1-root");
        Assert.Equal(16UL << 20, size);
        Assert.NotEqual(0, flags & 2); // NBD_FLAG_READ_ONLY
        Assert.Equal(1, (await host.GetAsync<ExportReply[]>(Routes.Exports)).Single().Connections);

        using var remove = await host.Client.DeleteAsync(Routes.ExportPath("vm1-root"));

        Assert.Equal(HttpStatusCode.NoContent, remove.StatusCode);
        Assert.True(await client.WaitForCloseAsync());
        Assert.Empty(await host.GetAsync<ExportReply[]>(Routes.Exports));
        Assert.Equal(ImageState.Open, (await host.GetAsync<ImageReply>(Routes.ImagePath("acme", "disk1"))).State);
    }

    [Fact]
    public async Task Removing_a_throttled_export_does_not_wait_for_the_requests_its_limit_holds_back()
    {
        using var dir = new TempDir();
        await using var host = await WithImageAsync(dir);
        await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk1", Name = "slow" });
        using (var put = await host.Client.PutAsJsonAsync(Routes.ExportLimitPath("slow"), new LimitRequest { Iops = 1 }, HostJson.Options))
            Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        await using var client = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
        await client.GoAsync("slow");
        for (ulong handle = 1; handle <= 30; handle++) await client.SendRequestAsync(0, RawNbdClient.CmdRead, handle, 0, 4096);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync(4096)).Error);

        // At 1 IOPS the other 29 reads would hold the removal (and every control change behind it) for half a minute.
        using var remove = await host.Client.DeleteAsync(Routes.ExportPath("slow")).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.NoContent, remove.StatusCode);
        Assert.True(await client.WaitForCloseAsync());
    }

    [Fact]
    public async Task Export_refusals_carry_their_stable_codes()
    {
        using var dir = new TempDir();
        await using var host = await WithImageAsync(dir);
        await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk1" });
        Task<HttpResponseMessage> Add(string tenant, string image, string? name = null) =>
            host.Client.PostAsJsonAsync(Routes.Exports, new ExportAddRequest { Tenant = tenant, Image = image, Name = name }, HostJson.Options);

        var exists = await HostHarness.ErrorAsync(Add("acme", "disk1"), HttpStatusCode.Conflict);
        var noImage = await HostHarness.ErrorAsync(Add("acme", "nope"), HttpStatusCode.NotFound);
        var noTenant = await HostHarness.ErrorAsync(Add("nobody", "disk1"), HttpStatusCode.NotFound);
        var badName = await HostHarness.ErrorAsync(Add("acme", "disk1", "a\nb"), HttpStatusCode.BadRequest);
        var noExport = await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.ExportPath("acme/none")), HttpStatusCode.NotFound);
        var closeExported = await HostHarness.ErrorAsync(host.Client.PostAsync(Routes.ImagePath("acme", "disk1", "close"), null), HttpStatusCode.Conflict);
        var deleteExported = await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.ImagePath("acme", "disk1")), HttpStatusCode.Conflict);

        Assert.Equal(ErrorCodes.ExportExists, exists.Code);
        Assert.Equal(ErrorCodes.ImageNotFound, noImage.Code);
        Assert.Equal(ErrorCodes.TenantNotFound, noTenant.Code);
        Assert.Equal(ErrorCodes.BadRequest, badName.Code);
        Assert.Equal(ErrorCodes.ExportNotFound, noExport.Code);
        Assert.Contains("'acme/none'", noExport.Message);
        Assert.Equal(ErrorCodes.ImageExported, closeExported.Code);
        Assert.Contains("'acme/disk1'", closeExported.Message);
        Assert.Equal(ErrorCodes.ImageExported, deleteExported.Code);
    }
}
