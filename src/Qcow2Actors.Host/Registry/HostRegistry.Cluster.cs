using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    /// <summary>
    /// Cluster mode: this node becomes the owner of TENANT/IMAGE (its sharded entity started here): the image is
    /// opened (a pending journal is replayed from PostgreSQL) and served as the export TENANT/IMAGE. Neither is
    /// written to this node's state file: sharding remembers which images are served, not the node.
    /// </summary>
    public Task ServeClusterImageAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        Names.Check(tenantName, "tenant");
        Names.Check(image, "image");
        var tenant = _tenants.GetOrAdd(tenantName, name => new TenantEntry(name, null, null));
        var entry = tenant.Images.GetOrAdd(image, name => new ImageEntry(tenantName, name, ImagePath(tenantName, name)));
        entry.ClusterOwned = true;
        if (!File.Exists(entry.Path))
        {
            tenant.Images.TryRemove(image, out _);
            throw HostApiException.NotFound(ErrorCodes.ImageNotFound, $"image file '{entry.Path}' is missing");
        }
        entry.Failure = null;
        if (entry.Image is null)
        {
            try
            {
                await OpenEntryAsync(tenant, entry);
            }
            catch (HostApiException)
            {
                ReleaseClosedCharge(tenant, entry);
                tenant.Images.TryRemove(image, out _);
                throw;
            }
        }
        var name = $"{tenantName}/{image}";
        if (!_exports.ContainsKey(name)) await AddExportCoreAsync(entry, name, readOnly: false, bitmaps: [], allocationDepth: false, record: null);
    });

    /// <summary>
    /// Cluster mode: this node hands TENANT/IMAGE over (its entity is stopping): the export's clients are
    /// disconnected once their requests in flight replied, the image is checkpointed and closed clean, and the
    /// node forgets it.
    /// </summary>
    public Task ReleaseClusterImageAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        if (_tenants.GetValueOrDefault(tenantName) is not { } tenant || tenant.Images.GetValueOrDefault(image) is not { ClusterOwned: true } entry)
            return;
        foreach (var name in entry.Exports)
        {
            if (!_exports.TryRemove(name, out var export)) continue;
            export.Served.SetGroups();
            using (var deadline = new CancellationTokenSource(Settings.StopTimeout))
                await _nbd!.RemoveExportAsync(name, deadline.Token);
            ForgetThrottle(export);
            await export.Export.DisposeAsync();
        }
        entry.Exports = [];
        if (entry.Image is not null && !await CloseEntryAsync(tenant, entry))
            _log.LogWarning("image {Image} did not close clean on hand-off; its journal makes the next owner recover it", entry.Key);
        ReleaseClosedCharge(tenant, entry);
        tenant.Images.TryRemove(image, out _);
        _log.LogInformation("image {Image} handed off", entry.Key);
    });

    /// <summary>The images this node owns in the cluster now (TENANT/IMAGE).</summary>
    public IReadOnlyList<string> ClusterOwnedImages() =>
        [.. _tenants.Values.SelectMany(t => t.Images.Values).Where(i => i.ClusterOwned && i.Image is not null).Select(i => i.Key).Order(StringComparer.Ordinal)];
}
