using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using static Qcow2Actors.Engine.Metrics.EngineMetrics;

namespace Qcow2Actors.Engine.Metrics;

/// <summary>
/// Records one open image (and its backing chain) in the <see cref="EngineMetrics"/> instruments.
/// Its tag set is built once at open, so recording allocates nothing; with no listener attached
/// each call only reads an instrument's <c>Enabled</c> flag.
/// </summary>
internal sealed class ImageMetrics
{
    // Images whose allocated clusters the gauge reports, with the owner that counts them.
    private static readonly ConcurrentDictionary<ImageMetrics, Func<long>> Allocated = new();

    private readonly KeyValuePair<string, object?>[] _tags;
    private readonly KeyValuePair<string, object?>[][] _faultTags;

    public ImageMetrics(string name, IReadOnlyList<KeyValuePair<string, object?>>? extraTags)
    {
        var tags = new List<KeyValuePair<string, object?>> { new(ImageTag, name) };
        foreach (var tag in extraTags ?? [])
            if (tag.Key is not (ImageTag or KindTag) && !string.IsNullOrEmpty(tag.Key)) tags.Add(tag);
        _tags = [.. tags];
        var kinds = Enum.GetValues<Qcow2ImageFaultKind>();
        _faultTags = new KeyValuePair<string, object?>[kinds.Length][];
        foreach (var kind in kinds) _faultTags[(int)kind] = [.. tags, new(KindTag, KindName(kind))];
        Name = name;
    }

    /// <summary>The metrics of an image opened with <paramref name="options"/> at <paramref name="path"/>.</summary>
    public static ImageMetrics For(string path, Qcow2OpenOptions options) =>
        new(options.MetricsName ?? Path.GetFullPath(path), options.MetricTags);

    /// <summary>The value of the image tag.</summary>
    public string Name { get; }

    public void L2Hit()
    {
        if (L2HitCounter.Enabled) Add(L2HitCounter, 1, _tags);
    }

    public void L2Miss()
    {
        if (L2MissCounter.Enabled) Add(L2MissCounter, 1, _tags);
    }

    public void JournalAppended(long bytes)
    {
        if (JournalAppendedCounter.Enabled) Add(JournalAppendedCounter, bytes, _tags);
    }

    /// <summary>A flush starts: its timestamp, or 0 when nobody listens to flush durations.</summary>
    public static long FlushStarted() => FlushHistogram.Enabled ? Stopwatch.GetTimestamp() : 0;

    /// <summary>A flush that started at <paramref name="started"/> succeeded.</summary>
    public void FlushDone(long started)
    {
        if (started == 0) return;
        try
        {
            FlushHistogram.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, _tags);
        }
        catch (Exception)
        {
            // A listener's failure is not the flush's.
        }
    }

    public void Checkpoint()
    {
        if (CheckpointCounter.Enabled) Add(CheckpointCounter, 1, _tags);
    }

    public void Fault(Qcow2ImageFaultKind kind)
    {
        if (FaultCounter.Enabled && (int)kind >= 0 && (int)kind < _faultTags.Length) Add(FaultCounter, 1, _faultTags[(int)kind]);
    }

    // A listener that throws loses its measurement, never the I/O or the actor that recorded it.
    private static void Add(Counter<long> counter, long value, KeyValuePair<string, object?>[] tags)
    {
        try
        {
            counter.Add(value, tags);
        }
        catch (Exception)
        {
            // Swallowed on purpose (see above).
        }
    }

    /// <summary>Reports <paramref name="allocatedClusters"/> (a lock-free read of the owner's count; negative: unknown) until <see cref="Untrack"/>.</summary>
    public void Track(Func<long> allocatedClusters) => Allocated[this] = allocatedClusters;

    /// <summary>The image closed: the gauge stops reporting it.</summary>
    public void Untrack() => Allocated.TryRemove(this, out _);

    /// <summary>Whether a listener reads the allocated-clusters gauge (an owner then counts at open).</summary>
    public static bool AllocatedObserved => AllocatedGauge.Enabled;

    internal static IEnumerable<Measurement<long>> ObserveAllocated()
    {
        foreach (var (image, read) in Allocated)
        {
            long value;
            try
            {
                value = read();
            }
            catch (Exception)
            {
                continue; // an image closing under the scrape: skip it this time
            }
            if (value >= 0) yield return new Measurement<long>(value, image._tags);
        }
    }

    private static string KindName(Qcow2ImageFaultKind kind) => kind switch
    {
        Qcow2ImageFaultKind.ReadOnly => "read_only",
        Qcow2ImageFaultKind.Corrupt => "corrupt",
        Qcow2ImageFaultKind.NoSpace => "no_space",
        Qcow2ImageFaultKind.UncleanClose => "unclean_close",
        _ => kind.ToString().ToLowerInvariant(),
    };
}
