using System.Collections.Concurrent;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Host.Registry;

/// <summary>A tenant: its quota (shared by its open images), image limit, throttle and images. Changed only under the registry's gate.</summary>
internal sealed class TenantEntry(string name, long? quota, int? maxImages)
{
    public string Name { get; } = name;

    /// <summary>Charged by every open image of the tenant and by the closed ones' file sizes.</summary>
    public SpaceQuota Quota { get; } = new(name, quota);

    public int? MaxImages { get; set; } = maxImages;

    /// <summary>Revoked (API): its tokens are refused and its NBD clients were cut off, until restored.</summary>
    public volatile bool Revoked;

    /// <summary>The tenant-wide throttle (one group shared by its exports); null: none.</summary>
    public LimitValues? Limit { get; set; }

    /// <summary>The group <see cref="Limit"/> runs as; null while there is no limit.</summary>
    public Qcow2Actors.Nbd.Throttling.ThrottleGroup? Group { get; set; }

    public ConcurrentDictionary<string, ImageEntry> Images { get; } = new(StringComparer.Ordinal);
}
