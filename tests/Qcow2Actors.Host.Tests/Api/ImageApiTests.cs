using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Api;

public class ImageApiTests
{
    private static async Task<HostHarness> WithTenantAsync(TempDir dir, int? maxImages = null)
    {
        var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme", MaxImages = maxImages });
        return host;
    }

    [QemuFact]
    public async Task An_image_is_created_with_q2a_create_options_left_open_closed_reopened_and_deleted()
    {
        using var dir = new TempDir();
        await using var host = await WithTenantAsync(dir);

        var created = await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"),
            new ImageCreateRequest { Name = "disk1", Size = 64 << 20, Options = "cluster_size=4k,lazy_refcounts=on" });
        Assert.Equal(ImageState.Open, created.State);
        Assert.Equal(host.ImagePath("acme", "disk1"), created.Path);
        Assert.Equal(64 << 20, created.VirtualSize);

        var info = await host.GetAsync<ImageReply>(Routes.ImagePath("acme", "disk1"));
        Assert.Equal(4096, info.Info!.Value.GetProperty("cluster-size").GetInt32());
        Assert.True(info.Info.Value.GetProperty("format-specific").GetProperty("data").GetProperty("lazy-refcounts").GetBoolean());

        var closed = await host.PostAsync<ImageReply>(Routes.ImagePath("acme", "disk1", "close"));
        Assert.Equal(ImageState.Closed, closed.State);
        QemuTools.AssertCheckClean(created.Path);
        var check = await host.PostAsync<CheckReply>(Routes.ImagePath("acme", "disk1", "check"));
        Assert.Equal((0L, 0L, 0L), (check.Errors, check.Leaks, check.Corruptions));
        Assert.Equal(16384, check.TotalClusters);

        Assert.Equal(ImageState.Open, (await host.PostAsync<ImageReply>(Routes.ImagePath("acme", "disk1", "open"))).State);
        var resized = await host.PostAsync<ImageReply>(Routes.ImagePath("acme", "disk1", "resize"), new ResizeRequest { Size = 128 << 20 }, HttpStatusCode.OK);
        Assert.Equal(128 << 20, resized.VirtualSize);
        Assert.Equal(["disk1"], (await host.GetAsync<ImageReply[]>(Routes.ImagesPath("acme"))).Select(i => i.Name));

        using var delete = await host.Client.DeleteAsync(Routes.ImagePath("acme", "disk1"));
        Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);
        Assert.False(File.Exists(created.Path));
        Assert.Empty(await host.GetAsync<ImageReply[]>(Routes.TenantImagesPath("acme")));
    }

    [Fact]
    public async Task Image_refusals_carry_their_stable_codes()
    {
        using var dir = new TempDir();
        await using var host = await WithTenantAsync(dir, maxImages: 1);
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk1", Size = 1 << 20 });
        Task<HttpResponseMessage> Create(string name, string? options = null, long size = 1 << 20) =>
            host.Client.PostAsJsonAsync(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = name, Size = size, Options = options }, HostJson.Options);

        var exists = await HostHarness.ErrorAsync(Create("disk1"), HttpStatusCode.Conflict);
        var limit = await HostHarness.ErrorAsync(Create("disk2"), HttpStatusCode.Conflict);
        using var patch = await host.Client.PatchAsJsonAsync(Routes.TenantPath("acme"), new TenantUpdateRequest { MaxImages = 0 }, HostJson.Options);
        var badOption = await HostHarness.ErrorAsync(Create("disk2", "cluster_sise=4k"), HttpStatusCode.BadRequest);
        var badValue = await HostHarness.ErrorAsync(Create("disk2", "compat=v9"), HttpStatusCode.BadRequest);
        var backing = await HostHarness.ErrorAsync(Create("disk2", "backing_file=/etc/passwd"), HttpStatusCode.BadRequest);
        var badSize = await HostHarness.ErrorAsync(Create("disk2", size: 0), HttpStatusCode.BadRequest);
        var hidden = await HostHarness.ErrorAsync(Create(".disk"), HttpStatusCode.BadRequest);
        var noImage = await HostHarness.ErrorAsync(host.Client.GetAsync(Routes.ImagePath("acme", "nope")), HttpStatusCode.NotFound);
        var noTenant = await HostHarness.ErrorAsync(host.Client.GetAsync(Routes.TenantImagesPath("nobody")), HttpStatusCode.NotFound);
        var shrink = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.ImagePath("acme", "disk1", "resize"), new ResizeRequest { Size = 512 }, HostJson.Options), HttpStatusCode.BadRequest);

        Assert.Equal(ErrorCodes.ImageExists, exists.Code);
        Assert.Equal(ErrorCodes.ImageLimit, limit.Code);
        Assert.Contains("maxImages 1", limit.Message);
        Assert.Equal(ErrorCodes.BadRequest, badOption.Code);
        Assert.Contains("cluster_sise", badOption.Message);
        Assert.Contains("version", badValue.Message);
        Assert.Contains("backing_file", backing.Message);
        Assert.Contains("size", badSize.Message);
        Assert.Equal(ErrorCodes.BadRequest, hidden.Code);
        Assert.Equal(ErrorCodes.ImageNotFound, noImage.Code);
        Assert.Equal(ErrorCodes.TenantNotFound, noTenant.Code);
        Assert.Contains("shrinking", shrink.Message);
    }

    [Fact]
    public async Task A_tenant_at_its_quota_cannot_create_another_image()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "tiny", Quota = 4096 });
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("tiny"), new ImageCreateRequest { Name = "a", Size = 1 << 20 });

        var refused = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.TenantImagesPath("tiny"),
            new ImageCreateRequest { Name = "b", Size = 1 << 20 }, HostJson.Options), HttpStatusCode.Conflict);

        Assert.Equal(ErrorCodes.QuotaExceeded, refused.Code);
        Assert.True((await host.GetAsync<TenantReply>(Routes.TenantPath("tiny"))).UsedBytes > 4096);
    }

    [Theory]
    [InlineData("falloc")]
    [InlineData("full")]
    public async Task Host_space_preallocation_is_refused_naming_the_option_not_silently_dropped(string mode)
    {
        using var dir = new TempDir();
        await using var host = await WithTenantAsync(dir);
        var refused = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.TenantImagesPath("acme"),
            new ImageCreateRequest { Name = "disk", Size = 1 << 20, Options = $"preallocation={mode}" }, HostJson.Options), HttpStatusCode.BadRequest);
        Assert.Contains($"'preallocation={mode}'", refused.Message);
        Assert.False(File.Exists(host.ImagePath("acme", "disk")));
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 1 << 20, Options = "preallocation=metadata" });
    }

    [QemuFact]
    public async Task An_open_image_is_checked_without_closing_it()
    {
        using var dir = new TempDir();
        await using var host = await WithTenantAsync(dir);
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk1", Size = 4 << 20 });
        var export = await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk1" });
        var write = QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 0x11 0 1M");
        Assert.True(write.ExitCode == 0, write.StdErr + write.StdOut);

        var check = await host.PostAsync<CheckReply>(Routes.ImagePath("acme", "disk1", "check"));

        Assert.Equal((0L, 0L, 0L), (check.Errors, check.Leaks, check.Corruptions));
        Assert.Equal(16, check.AllocatedClusters);
        Assert.Equal(ImageState.Open, (await host.GetAsync<ImageReply>(Routes.ImagePath("acme", "disk1"))).State);
    }
}
