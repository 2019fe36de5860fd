using System.Globalization;
using System.Net;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// <c>q2a host --cluster</c>: the <c>qcow2actors.host.cluster</c> section. Every node of a cluster runs with the
/// same data directory (shared storage), the same PostgreSQL journal and the same seed nodes; each has its own
/// remoting port, control socket and NBD port.
/// </summary>
public sealed record ClusterSettings
{
    /// <summary>The actor system's name: part of every node's address (<c>akka.tcp://q2a-host@HOST:PORT</c>).</summary>
    public const string SystemName = "q2a-host";

    /// <summary>The journal plugin id of the images' journals in cluster mode (<see cref="FencedSqlJournal"/>).</summary>
    public const string JournalPluginId = "akka.persistence.journal.q2a-cluster";

    /// <summary>The journal plugin id of cluster sharding's remembered entities.</summary>
    public const string ShardingJournalPluginId = "akka.persistence.journal.q2a-sharding";

    /// <summary>The snapshot store of cluster sharding's remembered entities.</summary>
    public const string ShardingSnapshotPluginId = "akka.persistence.snapshot-store.q2a-sharding";

    /// <summary>Address remoting binds and advertises (<c>hostname</c>; default 127.0.0.1).</summary>
    public required string Hostname { get; init; }

    /// <summary>Remoting TCP port (<c>port</c>; default 4053).</summary>
    public required int Port { get; init; }

    /// <summary>Seed node addresses (<c>seed-nodes</c>), e.g. <c>akka.tcp://q2a-host@127.0.0.1:4053</c>.</summary>
    public required IReadOnlyList<string> SeedNodes { get; init; }

    /// <summary>Npgsql connection string of the shared journal (<c>journal.connection-string</c>).</summary>
    public required string ConnectionString { get; init; }

    /// <summary>linq2db provider name (<c>journal.provider-name</c>; default PostgreSQL.15).</summary>
    public string ProviderName { get; init; } = "PostgreSQL.15";

    /// <summary>Number of shards the images are spread over (<c>shards</c>; default 30).</summary>
    public int Shards { get; init; } = 30;

    /// <summary>
    /// How often the split-brain resolver is asked to check its stable-after deadline (<c>sbr-tick-interval</c>;
    /// default 100 ms, <c>off</c> = Akka's own 1 s tick; <see cref="SbrTicker"/>).
    /// </summary>
    public TimeSpan SbrTickInterval { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Down a member at once when its remoting connection drops and its port refuses connections: its process is gone
    /// (<c>down-refused-nodes</c>; default on; <see cref="RefusedNodeDowning"/>).
    /// </summary>
    public bool DownRefusedNodes { get; init; } = true;

    /// <summary>Rebalancing of images between nodes (<c>rebalance-*</c> keys; clusterops).</summary>
    internal Ownership.RebalanceSettings Rebalance { get; init; } = Ownership.RebalanceSettings.Default;

    /// <summary>This node's name: its host-state file lives at DATA_DIR/.nodes/NAME; default HOST-PORT.</summary>
    public string NodeName => $"{Hostname}-{Port.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>This node's address.</summary>
    public string Address => $"akka.tcp://{SystemName}@{Hostname}:{Port.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Reads <c>qcow2actors.host.cluster</c>; a missing or bad key is one line naming it.</summary>
    /// <exception cref="ArgumentException">A bad or missing value.</exception>
    public static ClusterSettings Read(Akka.Configuration.Config config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var c = config.HasPath("qcow2actors.host.cluster") ? config.GetConfig("qcow2actors.host.cluster") : Akka.Configuration.Config.Empty;
        const string key = "qcow2actors.host.cluster";
        var hostname = c.GetString("hostname", "127.0.0.1") ?? "127.0.0.1";
        if (!IPAddress.TryParse(hostname, out _))
            throw new ArgumentException($"{key}.hostname '{hostname}' is not an IP address");
        int port = c.GetInt("port", 4053);
        if (port is < 1 or > 65535) throw new ArgumentException($"{key}.port {port} is out of range (1-65535)");
        IReadOnlyList<string> seeds = c.HasPath("seed-nodes") ? [.. c.GetStringList("seed-nodes")] : [];
        if (seeds.Count == 0) throw new ArgumentException($"{key}.seed-nodes is empty: list at least one node, e.g. \"akka.tcp://{SystemName}@127.0.0.1:4053\"");
        foreach (var seed in seeds)
        {
            if (!seed.StartsWith($"akka.tcp://{SystemName}@", StringComparison.Ordinal) || !Uri.TryCreate(seed, UriKind.Absolute, out var uri) || uri.Port <= 0)
                throw new ArgumentException($"{key}.seed-nodes: '{seed}' is not a node address (akka.tcp://{SystemName}@HOST:PORT)");
        }
        var connection = c.GetString("journal.connection-string", "") ?? "";
        if (connection.Length == 0)
            throw new ArgumentException($"{key}.journal.connection-string is required: the PostgreSQL journal every node shares (Host=...;Port=...;Username=...;Database=...)");
        int shards = c.GetInt("shards", 30);
        if (shards < 1) throw new ArgumentException($"{key}.shards must be at least 1");
        var tick = c.HasPath("sbr-tick-interval") && c.GetString("sbr-tick-interval") is "off" or "0"
            ? TimeSpan.Zero
            : c.GetTimeSpan("sbr-tick-interval", TimeSpan.FromMilliseconds(100), allowInfinite: false);
        if (tick < TimeSpan.Zero || (tick > TimeSpan.Zero && tick < TimeSpan.FromMilliseconds(10)) || tick > TimeSpan.FromSeconds(1))
            throw new ArgumentException($"{key}.sbr-tick-interval must be between 10ms and 1s, or off");
        return new ClusterSettings
        {
            SbrTickInterval = tick,
            DownRefusedNodes = c.GetBoolean("down-refused-nodes", true),
            Hostname = hostname,
            Port = port,
            SeedNodes = seeds,
            ConnectionString = connection,
            ProviderName = c.GetString("journal.provider-name", "PostgreSQL.15") ?? "PostgreSQL.15",
            Shards = shards,
            Rebalance = Ownership.RebalanceSettings.Read(c),
        };
    }

    /// <summary>
    /// The engine's and sharding's persistence in cluster mode, and failure detection tuned for fail-over in
    /// seconds; laid under the config file's own keys (which win).
    /// </summary>
    internal string Hocon()
    {
        string connection = Quote(ConnectionString);
        string provider = Quote(ProviderName);
        return $$"""
            qcow2actors.journal.plugin-id = "{{JournalPluginId}}"
            {{JournalPluginId}} {
              class = "Qcow2Actors.Host.Cluster.FencedSqlJournal, Qcow2Actors.Host"
              plugin-dispatcher = "akka.persistence.dispatchers.default-plugin-dispatcher"
              connection-string = {{connection}}
              provider-name = {{provider}}
              auto-initialize = on
              owner = {{Quote(Address)}}
            }
            {{ShardingJournalPluginId}} {
              class = "Akka.Persistence.Sql.Journal.SqlWriteJournal, Akka.Persistence.Sql"
              plugin-dispatcher = "akka.persistence.dispatchers.default-plugin-dispatcher"
              connection-string = {{connection}}
              provider-name = {{provider}}
              auto-initialize = on
              default.journal.table-name = "q2a_sharding_journal"
              default.metadata.table-name = "q2a_sharding_journal_metadata"
              default.tag.table-name = "q2a_sharding_tags"
            }
            {{ShardingSnapshotPluginId}} {
              class = "Akka.Persistence.Sql.Snapshot.SqlSnapshotStore, Akka.Persistence.Sql"
              plugin-dispatcher = "akka.persistence.dispatchers.default-plugin-dispatcher"
              connection-string = {{connection}}
              provider-name = {{provider}}
              auto-initialize = on
              default.snapshot.table-name = "q2a_sharding_snapshot"
            }
            akka.actor.provider = cluster
            akka.remote.dot-netty.tcp.hostname = {{Quote(Hostname)}}
            akka.remote.dot-netty.tcp.port = {{Port.ToString(CultureInfo.InvariantCulture)}}
            # Fail-over of a node that stops answering in about 5.5 s (README, cluster section: each key and why; a node
            # whose process died is downed at once by down-refused-nodes). It is seen unreachable ~3.6 s after its last
            # heartbeat (heartbeats every 250 ms, Akka's own 3 s of silence tolerated: 1 s downed a node stalled by the
            # JIT while it started, on a loaded 2-core machine), downed by the split-brain resolver once
            # that has held for stable-after (checked every sbr-tick-interval, not Akka's fixed 1 s), removed at the
            # next leader action once the survivors have seen it (gossip), and its shards start on the survivors after
            # down-removal-margin (the OFD lock and the owner generation, not this margin, keep its writes out).
            akka.cluster.failure-detector.heartbeat-interval = 250ms
            akka.cluster.failure-detector.acceptable-heartbeat-pause = 3s
            akka.cluster.failure-detector.threshold = 8.0
            akka.cluster.split-brain-resolver.stable-after = 500ms
            akka.cluster.down-removal-margin = 100ms
            akka.cluster.leader-actions-interval = 100ms
            akka.cluster.unreachable-nodes-reaper-interval = 100ms
            akka.cluster.gossip-interval = 200ms
            akka.cluster.sharding.remember-entities = on
            akka.cluster.sharding.distributed-data.majority-min-cap = 2
            akka.cluster.sharding.coordinator-state.write-majority-plus = 0
            akka.cluster.sharding.coordinator-state.read-majority-plus = 0
            akka.cluster.sharding.retry-interval = 200ms
            akka.cluster.sharding.shard-start-timeout = 5s
            akka.cluster.sharding.entity-restart-backoff = 1s
            akka.cluster.singleton.hand-over-retry-interval = 200ms
            akka.cluster.sharding.waiting-for-state-timeout = 1s
            akka.cluster.sharding.updating-state-timeout = 1s
            {{Rebalance.Hocon()}}{{Ownership.OwnershipSetup.Hocon}}
            """;
    }

    private static string Quote(string value) => "\"" + value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}
