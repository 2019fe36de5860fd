using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Auth;

/// <summary>A tenant token manages its own tenant only: the rest is missing (404) or host administration (403).</summary>
public class TenantTokenTests
{
    [Fact]
    public async Task A_tenant_token_manages_its_own_images_and_sees_other_tenants_as_missing()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        foreach (var t in new[] { "acme", "globex" })
        {
            await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = t });
            await host.PostAsync<ImageReply>(Routes.TenantImagesPath(t), new ImageCreateRequest { Name = "disk", Size = 1 << 20 });
        }
        await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "globex", Image = "disk" });
        var created = await host.PostAsync<TokenReply>(Routes.TenantTokensPath("acme"), new { });
        Assert.StartsWith("q2a_", created.Token);
        using var acme = host.ClientWithToken(created.Token!);

        // Its own tenant: full management.
        using (var image = await acme.PostAsJsonAsync(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "data", Size = 1 << 20 }, HostJson.Options))
            Assert.Equal(HttpStatusCode.Created, image.StatusCode);
        using (var export = await acme.PostAsJsonAsync(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk" }, HostJson.Options))
            Assert.Equal(HttpStatusCode.Created, export.StatusCode);
        using (var snapshot = await acme.PostAsJsonAsync(Routes.SnapshotPath("acme", "disk"), new SnapshotCreateRequest { Name = "s1" }, HostJson.Options))
            Assert.Equal(HttpStatusCode.Created, snapshot.StatusCode);

        // Lists show only its own.
        Assert.Equal(["acme"], (await acme.GetFromJsonAsync<TenantReply[]>(Routes.Tenants, HostJson.Options))!.Select(t => t.Name));
        Assert.Equal(["acme/data", "acme/disk"], (await acme.GetFromJsonAsync<ImageReply[]>(Routes.Images, HostJson.Options))!.Select(i => $"{i.Tenant}/{i.Name}"));
        Assert.Equal(["acme/disk"], (await acme.GetFromJsonAsync<ExportReply[]>(Routes.Exports, HostJson.Options))!.Select(e => e.Name));

        // Another tenant's things answer exactly as missing ones do to the operator.
        async Task SameAsMissing(Func<HttpClient, string, Task<HttpResponseMessage>> request, string existing, string missing)
        {
            var hidden = await HostHarness.ErrorAsync(request(acme, existing), HttpStatusCode.NotFound);
            var absent = await HostHarness.ErrorAsync(request(host.Client, missing), HttpStatusCode.NotFound);
            Assert.Equal(absent.Code, hidden.Code);
            Assert.Equal(absent.Message.Replace(missing, "X", StringComparison.Ordinal), hidden.Message.Replace(existing, "X", StringComparison.Ordinal));
        }
        await SameAsMissing((c, t) => c.GetAsync(Routes.ImagePath(t, "disk")), "globex", "nobody");
        await SameAsMissing((c, t) => c.DeleteAsync(Routes.ImagePath(t, "disk")), "globex", "nobody");
        await SameAsMissing((c, t) => c.GetAsync(Routes.ImagesPath(t)), "globex", "nobody");
        await SameAsMissing((c, t) => c.GetAsync(Routes.SnapshotPath(t, "disk")), "globex", "nobody");
        await SameAsMissing((c, t) => c.PostAsJsonAsync(Routes.Exports, new ExportAddRequest { Tenant = t, Image = "disk" }, HostJson.Options), "globex", "nobody");
        await SameAsMissing((c, e) => c.DeleteAsync(Routes.ExportPath(e)), "globex/disk", "nobody/disk");

        // Host administration is forbidden.
        var forbidden = new List<ErrorReply>
        {
            await HostHarness.ErrorAsync(acme.PostAsJsonAsync(Routes.Tenants, new TenantCreateRequest { Name = "mine" }, HostJson.Options), HttpStatusCode.Forbidden),
            await HostHarness.ErrorAsync(acme.PatchAsJsonAsync(Routes.TenantPath("acme"), new TenantUpdateRequest { Quota = 0 }, HostJson.Options), HttpStatusCode.Forbidden),
            await HostHarness.ErrorAsync(acme.PutAsJsonAsync(Routes.TenantLimitPath("acme"), new LimitRequest { Iops = 10 }, HostJson.Options), HttpStatusCode.Forbidden),
            await HostHarness.ErrorAsync(acme.PostAsync(Routes.TenantTokensPath("acme"), null), HttpStatusCode.Forbidden),
            await HostHarness.ErrorAsync(acme.GetAsync(Routes.Health), HttpStatusCode.Forbidden),
        };
        Assert.All(forbidden, e => Assert.Equal(ErrorCodes.Forbidden, e.Code));
        Assert.Single(await host.GetAsync<ImageReply[]>(Routes.TenantImagesPath("globex"))); // globex untouched
        Assert.Contains(await host.GetAsync<ExportReply[]>(Routes.Exports), e => e.Name == "globex/disk");

        // The audit log names the token for its changes and its refusals.
        var audit = host.AuditLines().Where(l => l.GetProperty("who").GetString() == $"tenant:acme/{created.Id}").ToList();
        Assert.Contains(audit, l => l.GetProperty("method").GetString() == "POST" && l.GetProperty("status").GetInt32() == 201);
        Assert.Contains(audit, l => l.GetProperty("target").GetString() == Routes.ImagePath("globex", "disk") && l.GetProperty("status").GetInt32() == 404);
        Assert.Contains(audit, l => l.GetProperty("target").GetString() == Routes.Health && l.GetProperty("code").GetString() == ErrorCodes.Forbidden);
    }

    [Fact]
    public async Task Tokens_are_stored_as_hashes_listed_without_the_secret_and_refused_once_revoked()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        var token = await host.PostAsync<TokenReply>(Routes.TenantTokensPath("acme"), new { });

        var listed = Assert.Single(await host.GetAsync<TokenReply[]>(Routes.TenantTokensPath("acme")));
        Assert.Equal(token.Id, listed.Id);
        Assert.Null(listed.Token);
        var state = await File.ReadAllTextAsync(Path.Combine(host.DataDir, "host-state.json"));
        Assert.DoesNotContain(token.Token!, state, StringComparison.Ordinal);
        Assert.Contains(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(token.Token!))), state, StringComparison.Ordinal);

        using var client = host.ClientWithToken(token.Token!);
        using (var ok = await client.GetAsync(Routes.TenantImagesPath("acme"))) Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        using (var revoke = await host.Client.DeleteAsync(Routes.TenantTokensPath("acme", token.Id))) Assert.Equal(HttpStatusCode.NoContent, revoke.StatusCode);
        var refused = await HostHarness.ErrorAsync(client.GetAsync(Routes.TenantImagesPath("acme")), HttpStatusCode.Unauthorized);
        Assert.Equal(ErrorCodes.Unauthorized, refused.Code);
        var missing = await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.TenantTokensPath("acme", token.Id)), HttpStatusCode.NotFound);
        Assert.Equal(ErrorCodes.TokenNotFound, missing.Code);
    }

    [Fact]
    public async Task A_tenant_adding_an_export_name_another_tenant_holds_is_refused_as_outside_its_prefix_not_told_it_exists()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        foreach (var t in new[] { "acme", "globex" })
        {
            await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = t });
            await host.PostAsync<ImageReply>(Routes.TenantImagesPath(t), new ImageCreateRequest { Name = "disk", Size = 1 << 20 });
        }
        // The operator may name globex's export anything, even under acme/.
        await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = "globex", Image = "disk", Name = "acme/shared" });
        var token = (await host.PostAsync<TokenReply>(Routes.TenantTokensPath("acme"), new { })).Token!;
        using var acme = host.ClientWithToken(token);

        var hidden = await HostHarness.ErrorAsync(acme.PostAsJsonAsync(Routes.Exports,
            new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "acme/shared" }, HostJson.Options), HttpStatusCode.Forbidden);
        var outside = await HostHarness.ErrorAsync(acme.PostAsJsonAsync(Routes.Exports,
            new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "globex/x" }, HostJson.Options), HttpStatusCode.Forbidden);
        Assert.Equal(ErrorCodes.Forbidden, hidden.Code);
        Assert.Equal(outside.Code, hidden.Code);
        Assert.DoesNotContain("globex", hidden.Message);
        // Its own existing export still answers export-exists.
        await acme.PostAsJsonAsync(Routes.Exports, new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "acme/mine" }, HostJson.Options);
        var exists = await HostHarness.ErrorAsync(acme.PostAsJsonAsync(Routes.Exports,
            new ExportAddRequest { Tenant = "acme", Image = "disk", Name = "acme/mine" }, HostJson.Options), HttpStatusCode.Conflict);
        Assert.Equal(ErrorCodes.ExportExists, exists.Code);
    }
}
