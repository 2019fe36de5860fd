using System.Globalization;

namespace Qcow2Actors.Host.Cluster.Ownership;

/// <summary>
/// Rebalancing (<c>qcow2actors.host.cluster.rebalance-*</c>): sharding's least-shard allocation strategy moves shards
/// (with their images) from the nodes holding the most to a node holding fewer, such as one that just joined; each
/// image moves by hand-off (checkpoint and close on the old owner, open on the new one).
/// </summary>
/// <param name="Interval"><c>rebalance-interval</c>: how often the coordinator looks for an imbalance (default 2 s).</param>
/// <param name="AbsoluteLimit"><c>rebalance-absolute-limit</c>: most shards moved per round (default 2; 0 turns rebalancing off).</param>
/// <param name="RelativeLimit"><c>rebalance-relative-limit</c>: most shards moved per round as a fraction of the allocated ones
/// (default 0.1; the lower of the two applies, and at least one shard moves).</param>
internal sealed record RebalanceSettings(TimeSpan Interval, int AbsoluteLimit, double RelativeLimit)
{
    /// <summary>The defaults: a joining node gets its share within seconds, a few images closed at a time.</summary>
    public static readonly RebalanceSettings Default = new(TimeSpan.FromSeconds(2), 2, 0.1);

    /// <summary>Reads the keys from the <c>qcow2actors.host.cluster</c> section; a bad value is one line naming it.</summary>
    /// <exception cref="ArgumentException">A bad value.</exception>
    public static RebalanceSettings Read(Akka.Configuration.Config section)
    {
        const string key = "qcow2actors.host.cluster";
        var interval = section.GetTimeSpan("rebalance-interval", Default.Interval, allowInfinite: false);
        if (interval <= TimeSpan.Zero) throw new ArgumentException($"{key}.rebalance-interval must be positive");
        int absolute = section.GetInt("rebalance-absolute-limit", Default.AbsoluteLimit);
        if (absolute < 0) throw new ArgumentException($"{key}.rebalance-absolute-limit {absolute} is negative (0 turns rebalancing off)");
        double relative = section.GetDouble("rebalance-relative-limit", Default.RelativeLimit);
        if (relative is <= 0 or > 1) throw new ArgumentException($"{key}.rebalance-relative-limit {relative.ToString(CultureInfo.InvariantCulture)} is out of range (0 < x <= 1)");
        return new RebalanceSettings(interval, absolute, relative);
    }

    /// <summary>Sharding's keys for these settings.</summary>
    public string Hocon()
    {
        const string strategy = "akka.cluster.sharding.least-shard-allocation-strategy";
        string interval = ((long)Interval.TotalMilliseconds).ToString(CultureInfo.InvariantCulture);
        // Off: the strategy's older algorithm (used when the absolute limit is 0) with a threshold no imbalance reaches.
        string limits = AbsoluteLimit == 0
            ? $"{strategy}.rebalance-absolute-limit = 0\n{strategy}.rebalance-threshold = 2147483647"
            : $"{strategy}.rebalance-absolute-limit = {AbsoluteLimit.ToString(CultureInfo.InvariantCulture)}\n"
              + $"{strategy}.rebalance-relative-limit = {RelativeLimit.ToString("R", CultureInfo.InvariantCulture)}";
        return $"akka.cluster.sharding.rebalance-interval = {interval}ms\n{limits}\n";
    }
}
