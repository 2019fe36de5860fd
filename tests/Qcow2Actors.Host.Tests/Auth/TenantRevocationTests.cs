using System.Net;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Registry;
using Qcow2Actors.Nbd.Tests;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Auth;

/// <summary>Revoking a tenant cuts its NBD clients off and refuses its tokens until it is restored; it survives a restart.</summary>
public class TenantRevocationTests
{
    [Fact]
    public async Task Revoking_a_tenant_closes_its_nbd_connections_and_refuses_its_tokens_until_restored()
    {
        using var dir = new TempDir();
        string token;
        await using (var host = await HostHarness.StartAsync(dir.Path))
        {
            foreach (var t in new[] { "acme", "globex" })
            {
                await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = t });
                await host.PostAsync<ImageReply>(Routes.TenantImagesPath(t), new ImageCreateRequest { Name = "disk", Size = 1 << 20 });
                await host.PostAsync<ExportReply>(Routes.Exports, new ExportAddRequest { Tenant = t, Image = "disk" });
            }
            token = (await host.PostAsync<TokenReply>(Routes.TenantTokensPath("acme"), new { })).Token!;
            await using var acmeNbd = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
            await acmeNbd.GoAsync("acme/disk");
            await using var globexNbd = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
            await globexNbd.GoAsync("globex/disk");

            var revoked = await host.PostAsync<TenantReply>(Routes.TenantActionPath("acme", revoke: true));

            Assert.True(revoked.Revoked);
            Assert.True(await acmeNbd.WaitForCloseAsync());
            Assert.Equal(1, (await host.GetAsync<ExportReply[]>(Routes.Exports)).Single(e => e.Name == "globex/disk").Connections);
            using var client = host.ClientWithToken(token);
            var refused = await HostHarness.ErrorAsync(client.GetAsync(Routes.TenantImagesPath("acme")), HttpStatusCode.Forbidden);
            Assert.Equal(ErrorCodes.Forbidden, refused.Code);
            Assert.Contains("revoked", refused.Message);
            Assert.Contains(host.AuditLines(), l => l.GetProperty("route").GetString() == Routes.TenantRevoke && l.GetProperty("status").GetInt32() == 200);
            // Without TLS too, the revoked tenant's export is unknown to new clients; the other tenant's is not.
            await using var again = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
            var go = await again.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("acme/disk"));
            Assert.Equal(RawNbdClient.RepErrUnknown, go[^1].Type);
            Assert.Contains("acme/disk", (await host.GetAsync<ExportReply[]>(Routes.Exports)).Select(e => e.Name));
        }

        // Persisted: still revoked after a restart, until restored.
        await using (var host = await HostHarness.StartAsync(dir.Path))
        {
            Assert.True((await host.GetAsync<TenantReply>(Routes.TenantPath("acme"))).Revoked);
            using var client = host.ClientWithToken(token);
            await HostHarness.ErrorAsync(client.GetAsync(Routes.TenantImagesPath("acme")), HttpStatusCode.Forbidden);
            Assert.False((await host.PostAsync<TenantReply>(Routes.TenantActionPath("acme", revoke: false))).Revoked);
            using var ok = await client.GetAsync(Routes.TenantImagesPath("acme"));
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
            await using var restored = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
            var (size, _) = await restored.GoAsync("acme/disk");
            Assert.Equal(1UL << 20, size);
        }
    }

    [Fact]
    public async Task A_tenant_request_whose_change_runs_after_a_revoke_is_refused()
    {
        using var dir = new TempDir();
        await using var host = await HostHarness.StartAsync(dir.Path);
        await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
        var token = await host.PostAsync<TokenReply>(Routes.TenantTokensPath("acme"), new { });
        var other = await host.PostAsync<TokenReply>(Routes.TenantTokensPath("acme"), new { });
        using (var deleted = await host.Client.DeleteAsync(Routes.TenantTokensPath("acme", other.Id)))
            Assert.True(deleted.IsSuccessStatusCode);
        await host.PostAsync<TenantReply>(Routes.TenantActionPath("acme", revoke: true));

        // As a request authenticated before the revoke: the token was good then, its change reaches the gate now.
        var refused = await Assert.ThrowsAsync<HostApiException>(() => AsTenant("acme", token.Id,
            () => host.Registry.CreateImageAsync("acme", new ImageCreateRequest { Name = "late", Size = 1 << 20 })));
        Assert.Equal((403, ErrorCodes.Forbidden), (refused.Status, refused.Code));
        await host.PostAsync<TenantReply>(Routes.TenantActionPath("acme", revoke: false));
        var gone = await Assert.ThrowsAsync<HostApiException>(() => AsTenant("acme", other.Id,
            () => host.Registry.CreateImageAsync("acme", new ImageCreateRequest { Name = "late", Size = 1 << 20 })));
        Assert.Equal(401, gone.Status);
        Assert.False(File.Exists(host.ImagePath("acme", "late")));
        await AsTenant("acme", token.Id, () => host.Registry.CreateImageAsync("acme", new ImageCreateRequest { Name = "late", Size = 1 << 20 }));
        Assert.True(File.Exists(host.ImagePath("acme", "late")));
    }

    /// <summary>Runs <paramref name="change"/> as TenantScopeFilter has a tenant token's request run.</summary>
    private static async Task AsTenant(string tenant, string tokenId, Func<Task> change)
    {
        Qcow2Actors.Host.Registry.HostRegistry.ActingToken.Value = (tenant, tokenId);
        await change();
    }
}
