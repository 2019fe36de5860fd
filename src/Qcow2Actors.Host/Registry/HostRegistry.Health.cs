using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    /// <summary>Counts and failed images, read without the gate (a slow change never delays a probe).</summary>
    public HealthReply Health()
    {
        var images = _tenants.Values.SelectMany(t => t.Images.Values).ToList();
        var failed = images.Where(i => i.Failure is not null).Select(i => i.Key).Order(StringComparer.Ordinal).ToList();
        return new HealthReply
        {
            Status = failed.Count == 0 ? HealthStatus.Ok : HealthStatus.Degraded,
            Tenants = _tenants.Count,
            Images = images.Count,
            OpenImages = images.Count(i => i.Image is not null),
            Exports = _exports.Count,
            Connections = _nbd?.ConnectionCount ?? 0,
            FailedImages = failed,
        };
    }
}
