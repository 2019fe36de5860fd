using Akka.Configuration;

namespace Qcow2Actors.Engine.Write;

/// <summary>The engine's HOCON settings (<c>qcow2actors.engine</c> and <c>qcow2actors.journal</c>).</summary>
public sealed record EngineSettings
{
    /// <summary>Parsed L2 tables kept for lookups per image (the read cache; dirty tables are always kept).</summary>
    public int L2CacheSize { get; init; } = 1024;
    /// <summary>Live L2 table actors per image; past this, idle clean ones are passivated.</summary>
    public int MaxLiveTableActors { get; init; } = 256;
    /// <summary>A clean L2 table actor with no work for this long stops.</summary>
    public TimeSpan TableIdleTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>
    /// An image with no requests for this long gives its memory back: cached L2 tables that are on
    /// disk are dropped and clean table actors stop (zero: never). Tables changed since the last
    /// checkpoint stay until a checkpoint has written them.
    /// </summary>
    public TimeSpan CacheIdleTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Checkpoint once this many records wait in the journal.</summary>
    public int CheckpointRecords { get; init; } = 1048576;
    /// <summary>Checkpoint when journal records have waited this long (zero: never on time).</summary>
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>
    /// The clock of every engine timer (checkpoint interval, table idle timeout, cache idle timeout);
    /// not read from HOCON: tests pass a fake one to <see cref="ImageHost.Create(Akka.Configuration.Config?, string, TimeProvider?)"/>.
    /// </summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
    /// <summary>
    /// One memory budget in bytes for the L2 tables cached and held by table actors across every
    /// image the host opens (HOCON <c>qcow2actors.host.metadata-cache</c>); 0: none, each image keeps
    /// its own <see cref="L2CacheSize"/> and <see cref="MaxLiveTableActors"/> only.
    /// </summary>
    public long MetadataCacheBytes { get; init; } = 256L << 20;
    /// <summary>
    /// Most the image file is grown past the end of its allocated clusters at a time (sparse, by
    /// truncate), so that writes filling new clusters land inside the file instead of each extending it;
    /// 0: never. The step is an eighth of the allocated size, at least one cluster, at most this.
    /// A clean close trims the file back to its allocated end.
    /// </summary>
    public long GrowAhead { get; init; } = 8L << 20;
    /// <summary>Akka.Persistence journal plugin id.</summary>
    public string JournalPluginId { get; init; } = "akka.persistence.journal.qcow2-file";
    /// <summary>Akka.Persistence snapshot plugin id (the engine takes no snapshots).</summary>
    public string SnapshotPluginId { get; init; } = "akka.persistence.no-snapshot-store";

    /// <summary>Reads the settings from a configuration that includes the reference config.</summary>
    public static EngineSettings From(Config config)
    {
        var e = config.GetConfig("qcow2actors.engine");
        var j = config.GetConfig("qcow2actors.journal");
        var d = new EngineSettings();
        return new EngineSettings
        {
            L2CacheSize = e?.GetInt("l2-cache-size", d.L2CacheSize) ?? d.L2CacheSize,
            MaxLiveTableActors = e?.GetInt("max-live-table-actors", d.MaxLiveTableActors) ?? d.MaxLiveTableActors,
            TableIdleTimeout = e?.GetTimeSpan("table-idle-timeout", d.TableIdleTimeout) ?? d.TableIdleTimeout,
            CacheIdleTimeout = e?.GetTimeSpan("cache-idle-timeout", d.CacheIdleTimeout) ?? d.CacheIdleTimeout,
            CheckpointRecords = e?.GetInt("checkpoint-records", d.CheckpointRecords) ?? d.CheckpointRecords,
            CheckpointInterval = e?.GetTimeSpan("checkpoint-interval", d.CheckpointInterval) ?? d.CheckpointInterval,
            GrowAhead = ReadSize(config, "qcow2actors.engine.grow-ahead", d.GrowAhead, "8MiB; 0 = never grow ahead"),
            MetadataCacheBytes = ReadSize(config, "qcow2actors.host.metadata-cache", d.MetadataCacheBytes, "256MiB; 0 = no shared budget"),
            JournalPluginId = j?.GetString("plugin-id", d.JournalPluginId) ?? d.JournalPluginId,
            SnapshotPluginId = j?.GetString("snapshot-plugin-id", d.SnapshotPluginId) ?? d.SnapshotPluginId,
        };
    }

    // A byte size at key (fallback when missing); anything else is one line naming the key and an example.
    private static long ReadSize(Config config, string key, long fallback, string example)
    {
        if (!config.HasPath(key)) return fallback;
        long? bytes;
        try
        {
            bytes = config.GetByteSize(key);
        }
        catch (Exception ex) when (ex is FormatException or ConfigurationException or OverflowException or ArgumentException)
        {
            bytes = null;
        }
        if (bytes is null or < 0)
            throw new ConfigurationException($"{key} = '{config.GetString(key)}' is not a size (e.g. {example})");
        return bytes.Value;
    }
}
