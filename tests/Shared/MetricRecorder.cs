using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace Qcow2Actors.Tests.Shared;

/// <summary>One measurement an instrument published: its instrument's name, value and tags.</summary>
internal sealed record RecordedMeasurement(string Instrument, double Value, IReadOnlyDictionary<string, object?> Tags)
{
    public string? Tag(string key) => Tags.TryGetValue(key, out var value) ? value?.ToString() : null;
}

/// <summary>
/// Listens to every instrument of one meter and keeps the measurements whose tags pass a filter
/// (the meters are process-wide and tests run in parallel, so each test filters on a tag value
/// only it uses: its export name or image path). Observable instruments are read on <see cref="Observe"/>.
/// </summary>
internal sealed class MetricRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentQueue<RecordedMeasurement> _measurements = new();
    private readonly Func<IReadOnlyDictionary<string, object?>, bool> _filter;

    public MetricRecorder(string meterName, Func<IReadOnlyDictionary<string, object?>, bool> filter)
    {
        _filter = filter;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == meterName) listener.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
        _listener.Start();
    }

    /// <summary>Keeps only measurements whose tag <paramref name="key"/> equals <paramref name="value"/>.</summary>
    public static MetricRecorder ForTag(string meterName, string key, string value) =>
        new(meterName, tags => tags.TryGetValue(key, out var v) && Equals(v?.ToString(), value));

    private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var copy = new Dictionary<string, object?>(tags.Length);
        foreach (var tag in tags) copy[tag.Key] = tag.Value;
        if (_filter(copy)) _measurements.Enqueue(new RecordedMeasurement(instrument.Name, value, copy));
    }

    /// <summary>Reads every observable instrument now (their callbacks run on this thread).</summary>
    public void Observe() => _listener.RecordObservableInstruments();

    public IReadOnlyList<RecordedMeasurement> All => [.. _measurements];

    public IReadOnlyList<RecordedMeasurement> Of(string instrument) => [.. _measurements.Where(m => m.Instrument == instrument)];

    /// <summary>Sum of <paramref name="instrument"/>'s measurements whose tags include every pair in <paramref name="tags"/>.</summary>
    public double Sum(string instrument, params (string Key, string Value)[] tags) =>
        Of(instrument).Where(m => tags.All(t => m.Tag(t.Key) == t.Value)).Sum(m => m.Value);

    /// <summary>Number of <paramref name="instrument"/>'s measurements whose tags include every pair in <paramref name="tags"/>.</summary>
    public int Count(string instrument, params (string Key, string Value)[] tags) =>
        Of(instrument).Count(m => tags.All(t => m.Tag(t.Key) == t.Value));

    public void Dispose() => _listener.Dispose();
}
