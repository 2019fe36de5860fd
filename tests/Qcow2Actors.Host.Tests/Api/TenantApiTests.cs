using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Api;

public class TenantApiTests
{
    [Fact]
    public async Task Tenants_are_created_listed_changed_and_removed()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);

        var created = await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme", Quota = 1 << 30, MaxImages = 3 });
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "globex" });
        Assert.Equal(new TenantReply { Name = "acme", Quota = 1 << 30, MaxImages = 3, UsedBytes = 0, Images = 0 }, created);
        Assert.True(Directory.Exists(Path.Combine(host.DataDir, "acme")));

        var list = await host.GetAsync<TenantReply[]>(Routes.Tenants);
        Assert.Equal(["acme", "globex"], list.Select(t => t.Name));

        using var patch = await host.Client.PatchAsJsonAsync(Routes.TenantPath("acme"), new TenantUpdateRequest { Quota = 0, MaxImages = 5 }, HostJson.Options);
        patch.EnsureSuccessStatusCode();
        var changed = await host.GetAsync<TenantReply>(Routes.TenantPath("acme"));
        Assert.Null(changed.Quota); // 0: unlimited
        Assert.Equal(5, changed.MaxImages);

        using var delete = await host.Client.DeleteAsync(Routes.TenantPath("globex"));
        Assert.Equal(HttpStatusCode.NoContent, delete.StatusCode);
        Assert.Equal(["acme"], (await host.GetAsync<TenantReply[]>(Routes.Tenants)).Select(t => t.Name));
    }

    [Fact]
    public async Task Tenant_refusals_carry_their_stable_codes()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 1 << 20 });

        var exists = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.Tenants, new TenantCreateRequest { Name = "acme" }, HostJson.Options), HttpStatusCode.Conflict);
        var missing = await HostHarness.ErrorAsync(host.Client.GetAsync(Routes.TenantPath("nobody")), HttpStatusCode.NotFound);
        var badName = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.Tenants, new TenantCreateRequest { Name = "../etc" }, HostJson.Options), HttpStatusCode.BadRequest);
        var negative = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.Tenants, new TenantCreateRequest { Name = "x", Quota = -1 }, HostJson.Options), HttpStatusCode.BadRequest);
        var notEmpty = await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.TenantPath("acme")), HttpStatusCode.Conflict);
        var malformed = await HostHarness.ErrorAsync(host.Client.PostAsync(Routes.Tenants, new StringContent("{", System.Text.Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest);
        var noName = await HostHarness.ErrorAsync(host.Client.PostAsync(Routes.Tenants, new StringContent("""{"quota":5}""", System.Text.Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest);

        Assert.Equal(ErrorCodes.TenantExists, exists.Code);
        Assert.Equal(ErrorCodes.TenantNotFound, missing.Code);
        Assert.Contains("'nobody'", missing.Message);
        Assert.Equal(ErrorCodes.BadRequest, badName.Code);
        Assert.Contains("'../etc'", badName.Message);
        Assert.Equal(ErrorCodes.BadRequest, negative.Code);
        Assert.Contains("quota", negative.Message);
        Assert.Equal(ErrorCodes.TenantNotEmpty, notEmpty.Code);
        Assert.Equal(ErrorCodes.BadRequest, malformed.Code);
        Assert.Equal(ErrorCodes.BadRequest, noName.Code);
        Assert.Contains("name", noName.Message);
    }
}
