using System.Diagnostics.Metrics;

namespace Qcow2Actors.Engine.Metrics;

/// <summary>
/// The engine's instruments, on the <see cref="System.Diagnostics.Metrics.Meter"/> named
/// <see cref="MeterName"/> (subscribe with a <see cref="MeterListener"/> or OpenTelemetry's
/// <c>AddMeter("Qcow2Actors.Engine")</c>). Every instrument is per open image: tagged
/// <see cref="ImageTag"/> (<see cref="Qcow2OpenOptions.MetricsName"/>, else the image's full path)
/// plus <see cref="Qcow2OpenOptions.MetricTags"/>.
/// </summary>
/// <remarks>
/// With no listener attached the I/O paths only read each instrument's
/// <see cref="Instrument.Enabled"/> flag. Backing files count toward the image opened on top of them.
/// </remarks>
public static class EngineMetrics
{
    /// <summary>Name of the meter every engine instrument belongs to.</summary>
    public const string MeterName = "Qcow2Actors.Engine";

    /// <summary>Tag: which open image (<see cref="Qcow2OpenOptions.MetricsName"/> or the full path).</summary>
    public const string ImageTag = "image";

    /// <summary>Tag of <see cref="Faults"/>: <c>read_only</c>, <c>corrupt</c>, <c>no_space</c> or <c>unclean_close</c>.</summary>
    public const string KindTag = "kind";

    /// <summary>Counter (<c>By</c>; image): bytes appended to the image's write-ahead journal file (the file journal plugin; framing included).</summary>
    public const string JournalAppended = "qcow2actors.engine.journal.appended";

    /// <summary>Histogram (<c>s</c>; image): duration of successful <see cref="Qcow2Image.FlushAsync"/> calls (FUA writes included): data fdatasync plus the journal group commit.</summary>
    public const string FlushDuration = "qcow2actors.engine.flush.duration";

    /// <summary>Counter (<c>{checkpoint}</c>; image): checkpoints completed (tables written in place, header clean, journal truncated).</summary>
    public const string Checkpoints = "qcow2actors.engine.checkpoints";

    /// <summary>Counter (<c>{lookup}</c>; image): L2 table lookups the L2 cache answered.</summary>
    public const string L2CacheHits = "qcow2actors.engine.l2_cache.hits";

    /// <summary>Counter (<c>{lookup}</c>; image): L2 table lookups that had to load the table (or wait for a load already running).</summary>
    public const string L2CacheMisses = "qcow2actors.engine.l2_cache.misses";

    /// <summary>Observable gauge (<c>{cluster}</c>; image): host clusters with a nonzero refcount, for images open read-write.</summary>
    public const string AllocatedClusters = "qcow2actors.engine.allocated_clusters";

    /// <summary>Counter (<c>{fault}</c>; image, kind): faults reported for the image (<see cref="Qcow2OpenOptions.OnFault"/>).</summary>
    public const string Faults = "qcow2actors.engine.faults";

    /// <summary>
    /// Bucket boundaries (seconds) advised for <see cref="FlushDuration"/>: 10 µs to 10 s, about
    /// three per decade (an fdatasync takes microseconds on a cache, seconds on a stalled disk).
    /// </summary>
    public static IReadOnlyList<double> DurationBuckets { get; } =
        [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    // One meter for the process: listeners and exporters find it by name, like the runtime's own meters.
    internal static readonly Meter Meter = new(MeterName);

    internal static readonly Counter<long> JournalAppendedCounter =
        Meter.CreateCounter<long>(JournalAppended, "By", "Bytes appended to image journals");

    internal static readonly Histogram<double> FlushHistogram =
        Meter.CreateHistogram<double>(FlushDuration, "s", "Duration of image flushes",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DurationBuckets });

    internal static readonly Counter<long> CheckpointCounter =
        Meter.CreateCounter<long>(Checkpoints, "{checkpoint}", "Image checkpoints completed");

    internal static readonly Counter<long> L2HitCounter =
        Meter.CreateCounter<long>(L2CacheHits, "{lookup}", "L2 table lookups answered by the cache");

    internal static readonly Counter<long> L2MissCounter =
        Meter.CreateCounter<long>(L2CacheMisses, "{lookup}", "L2 table lookups that loaded the table");

    internal static readonly ObservableGauge<long> AllocatedGauge =
        Meter.CreateObservableGauge(AllocatedClusters, ImageMetrics.ObserveAllocated, "{cluster}", "Host clusters in use by open read-write images");

    internal static readonly Counter<long> FaultCounter =
        Meter.CreateCounter<long>(Faults, "{fault}", "Faults of open images, by kind");
}
