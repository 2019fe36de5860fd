using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Nbd.Tests;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Api;

/// <summary>An export's extra NBD metadata contexts (bitmaps, allocation depth) set through the control API and kept across restarts.</summary>
public class ExportMetaContextApiTests
{
    private static async Task<List<string>> ListContextsAsync(HostHarness host, string export)
    {
        await using var client = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
        await client.OptionAsync(RawNbdClient.OptStructuredReply, []);
        var replies = await client.OptionAsync(RawNbdClient.OptListMeta, RawNbdClient.MetaRequest(export));
        Assert.Equal(RawNbdClient.RepAck, replies[^1].Type);
        return replies[..^1].Select(r => Encoding.UTF8.GetString(r.Data, 4, r.Data.Length - 4)).ToList();
    }

    [QemuFact]
    public async Task An_export_with_bitmaps_and_allocation_depth_offers_them_and_keeps_them_across_a_restart()
    {
        using var dir = new TempDir();
        await using (var host = await HostHarness.StartAsync(dir.Path))
        {
            await host.PostAsync<TenantReply>(Routes.Tenants, new TenantCreateRequest { Name = "acme" });
            await host.PostAsync<ImageReply>(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk1", Size = 16 << 20 });
            await host.PostAsync<ImageReply>(Routes.ImagePath("acme", "disk1", "close"));
            QemuTools.QemuImg("bitmap", "--add", host.ImagePath("acme", "disk1"), "backup-1").EnsureSuccess();

            var missing = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.Exports,
                new ExportAddRequest { Tenant = "acme", Image = "disk1", Bitmaps = ["nope"] }, HostJson.Options), HttpStatusCode.BadRequest);
            Assert.Equal("bad-request", missing.Code);
            Assert.Contains("Bitmap 'nope' is not found", missing.Message);

            var export = await host.PostAsync<ExportReply>(Routes.Exports,
                new ExportAddRequest { Tenant = "acme", Image = "disk1", Bitmaps = ["backup-1"], AllocationDepth = true });
            Assert.Equal(["backup-1"], export.Bitmaps);
            Assert.True(export.AllocationDepth);
            Assert.Equal(["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:backup-1"], await ListContextsAsync(host, "acme/disk1"));

            // A write through the export is in the bitmap at once.
            QemuTools.QemuIo("-f", "raw", export.Uri, "-c", "write -P 1 1M 4k").EnsureSuccess();
            await using var client = await RawNbdClient.ConnectAsync(host.Registry.Nbd!.LocalEndPoint!);
            await client.OptionAsync(RawNbdClient.OptStructuredReply, []);
            await client.OptionAsync(RawNbdClient.OptSetMeta, RawNbdClient.MetaRequest("acme/disk1", "qemu:dirty-bitmap:backup-1"));
            await client.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("acme/disk1"));
            await client.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, 1, 0, 4 << 20);
            var chunk = await client.ReadChunkAsync();
            Assert.Equal(5, chunk.Type);
            var descriptors = Enumerable.Range(0, (chunk.Payload.Length - 4) / 8)
                .Select(i => (BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(4 + 8 * i)), BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(8 + 8 * i))))
                .ToList();
            Assert.Equal([(1u << 20, 0u), (65536u, 1u), ((3u << 20) - 65536u, 0u)], descriptors);
        }

        await using (var host = await HostHarness.StartAsync(dir.Path))
        {
            var export = (await host.GetAsync<ExportReply[]>(Routes.Exports)).Single();
            Assert.Equal(["backup-1"], export.Bitmaps);
            Assert.True(export.AllocationDepth);
            Assert.Equal(["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:backup-1"], await ListContextsAsync(host, "acme/disk1"));
        }
    }
}
