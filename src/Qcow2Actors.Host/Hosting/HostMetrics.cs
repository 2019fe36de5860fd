using System.Diagnostics.Metrics;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Hosting;

/// <summary>
/// The host's own instruments on the "Qcow2Actors.Host" meter, observed from the registry at each scrape:
/// tenants, images by state, exports, NBD connections, and per tenant the quota used and its limit.
/// </summary>
internal sealed class HostMetrics : IDisposable
{
    public const string MeterName = "Qcow2Actors.Host";

    private readonly Meter _meter = new(MeterName);

    public HostMetrics(HostRegistry registry)
    {
        _meter.CreateObservableGauge("qcow2actors.host.tenants", () => registry.Tenants.Count(), "{tenant}", "Tenants configured");
        _meter.CreateObservableGauge("qcow2actors.host.images", () => ImagesByState(registry), "{image}", "Images by state (open, closed, failed)");
        _meter.CreateObservableGauge("qcow2actors.host.exports", () => registry.Exports.Count(), "{export}", "NBD exports served");
        _meter.CreateObservableGauge("qcow2actors.host.connections", () => registry.Nbd?.ConnectionCount ?? 0, "{connection}", "NBD connections open");
        _meter.CreateObservableGauge("qcow2actors.host.quota.used", () => registry.Tenants.Select(t =>
            new Measurement<long>(t.Quota.UsedBytes, new KeyValuePair<string, object?>("tenant", t.Name))), "By", "Bytes charged to each tenant's quota");
        _meter.CreateObservableGauge("qcow2actors.host.quota.limit", () => registry.Tenants.Where(t => t.Quota.LimitBytes is not null).Select(t =>
            new Measurement<long>(t.Quota.LimitBytes!.Value, new KeyValuePair<string, object?>("tenant", t.Name))), "By", "Each tenant's quota");
    }

    private static IEnumerable<Measurement<int>> ImagesByState(HostRegistry registry)
    {
        var images = registry.Tenants.SelectMany(t => t.Images.Values).ToList();
        int failed = images.Count(i => i.Failure is not null);
        int open = images.Count(i => i.Failure is null && i.Image is not null);
        yield return new(open, new KeyValuePair<string, object?>("state", "open"));
        yield return new(images.Count - open - failed, new KeyValuePair<string, object?>("state", "closed"));
        yield return new(failed, new KeyValuePair<string, object?>("state", "failed"));
    }

    public void Dispose() => _meter.Dispose();
}
