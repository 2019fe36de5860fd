using System.Diagnostics;
using Qcow2Actors.Nbd.Protocol;
using static Qcow2Actors.Nbd.Metrics.NbdMetrics;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Metrics;

/// <summary>
/// Records one connection's requests in the <see cref="NbdMetrics"/> instruments. The tag sets
/// (export name, the export's extra tags, and the command or direction) are built once when the
/// connection starts serving, so a request allocates nothing; with no listener attached each call
/// only reads the instruments' <c>Enabled</c> flags. A listener that throws loses its measurement,
/// never the request: every method swallows what a callback throws.
/// </summary>
internal sealed class ExportMetrics
{
    private const int OtherIndex = 8;

    private static readonly string[] OpNames =
        ["read", "write", "other", "flush", "trim", "other", "write_zeroes", "block_status", "other"];

    private readonly KeyValuePair<string, object?>[] _exportTags;
    private readonly KeyValuePair<string, object?>[][] _opTags;
    private readonly KeyValuePair<string, object?>[] _readTags;
    private readonly KeyValuePair<string, object?>[] _writeTags;

    public ExportMetrics(INbdExport export)
    {
        var tags = new List<KeyValuePair<string, object?>> { new(ExportTag, export.Name) };
        foreach (var tag in export.MetricTags ?? [])
            if (tag.Key is not (ExportTag or OpTag or DirectionTag or ErrnoTag) && !string.IsNullOrEmpty(tag.Key)) tags.Add(tag);
        _exportTags = [.. tags];
        _opTags = new KeyValuePair<string, object?>[OpNames.Length][];
        for (var i = 0; i < OpNames.Length; i++) _opTags[i] = [.. tags, new(OpTag, OpNames[i])];
        _readTags = [.. tags, new(DirectionTag, "read")];
        _writeTags = [.. tags, new(DirectionTag, "write")];
    }

    private ReadOnlySpan<KeyValuePair<string, object?>> OpTags(ushort type) => _opTags[type < OtherIndex ? type : OtherIndex];

    /// <summary>The connection entered transmission.</summary>
    public void ConnectionOpened() => Guard(() => ConnectionCounter.Add(1, _exportTags));

    /// <summary>The connection's transmission ended (paired with <see cref="ConnectionOpened"/> whatever the listeners did meanwhile).</summary>
    public void ConnectionClosed() => Guard(() => ConnectionCounter.Add(-1, _exportTags));

    /// <summary>
    /// A request was dispatched: returns its start timestamp, or 0 when neither the in-flight count
    /// nor the duration is being listened to (<see cref="Finish"/> then records neither for it).
    /// </summary>
    public long Start()
    {
        if (!InFlightCounter.Enabled && !DurationHistogram.Enabled) return 0;
        try
        {
            InFlightCounter.Add(1, _exportTags);
        }
        catch (Exception)
        {
            return 0; // not counted in flight, so not taken out either
        }
        return Stopwatch.GetTimestamp();
    }

    /// <summary>
    /// A request's reply is being queued: counts it, its payload bytes when it succeeded
    /// (<paramref name="bytes"/>), its error, its duration, and takes it out of the in-flight count.
    /// </summary>
    public void Finish(in NbdRequest request, NbdError error, long bytes)
    {
        try
        {
            Record(request, error, bytes);
        }
        catch (Exception)
        {
            // A listener's failure is not the request's.
        }
    }

    private void Record(in NbdRequest request, NbdError error, long bytes)
    {
        var ops = OpTags(request.Type);
        if (RequestCounter.Enabled) RequestCounter.Add(1, ops);
        if (error != NbdError.None)
        {
            if (ErrorCounter.Enabled) ErrorCounter.Add(1, [.. ops, new(ErrnoTag, ErrnoName(error))]);
        }
        else if (bytes > 0 && IoCounter.Enabled)
        {
            IoCounter.Add(bytes, request.Type == CmdRead ? _readTags : _writeTags);
        }
        Stop(request, ops);
    }

    /// <summary>A request that will get no reply (the connection is going away): it only leaves the in-flight count.</summary>
    public void Abandon(in NbdRequest request)
    {
        try
        {
            Stop(request, OpTags(request.Type));
        }
        catch (Exception)
        {
            // A listener's failure is not the connection's.
        }
    }

    private static void Guard(Action record)
    {
        try
        {
            record();
        }
        catch (Exception)
        {
            // A listener's failure is not the connection's.
        }
    }

    private void Stop(in NbdRequest request, ReadOnlySpan<KeyValuePair<string, object?>> ops)
    {
        if (request.Started == 0) return;
        InFlightCounter.Add(-1, _exportTags);
        if (DurationHistogram.Enabled) DurationHistogram.Record(Stopwatch.GetElapsedTime(request.Started).TotalSeconds, ops);
    }

    /// <summary>The errno's C name, as clients and logs spell it.</summary>
    internal static string ErrnoName(NbdError error) => error switch
    {
        NbdError.NotPermitted => "EPERM",
        NbdError.IoError => "EIO",
        NbdError.OutOfMemory => "ENOMEM",
        NbdError.InvalidArgument => "EINVAL",
        NbdError.NoSpace => "ENOSPC",
        NbdError.Overflow => "EOVERFLOW",
        NbdError.NotSupported => "ENOTSUP",
        NbdError.Shutdown => "ESHUTDOWN",
        _ => "E" + ((uint)error).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
