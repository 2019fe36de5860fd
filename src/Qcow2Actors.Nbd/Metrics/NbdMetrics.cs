using System.Diagnostics.Metrics;

namespace Qcow2Actors.Nbd.Metrics;

/// <summary>
/// The NBD server's instruments, on the <see cref="System.Diagnostics.Metrics.Meter"/> named
/// <see cref="MeterName"/> (subscribe with a <see cref="MeterListener"/> or OpenTelemetry's
/// <c>AddMeter("Qcow2Actors.Nbd")</c>). Per-export instruments carry the tag <see cref="ExportTag"/>
/// (the export's name) plus the export's own <see cref="INbdExport.MetricTags"/> (a host adds
/// <c>tenant</c> there).
/// </summary>
/// <remarks>
/// Requests are counted when their reply is handed to the sender, once each, whatever the outcome:
/// a WRITE of N bytes is one <see cref="Requests"/> measurement and N bytes of <see cref="Io"/>
/// (direction write) when it succeeds; a READ of N bytes the same with direction read. Failed
/// requests add to <see cref="Errors"/> and move no bytes. With no listener attached the request
/// path only reads each instrument's <see cref="Instrument.Enabled"/> flag.
/// </remarks>
public static class NbdMetrics
{
    /// <summary>Name of the meter every NBD instrument belongs to.</summary>
    public const string MeterName = "Qcow2Actors.Nbd";

    /// <summary>Tag: the export's name.</summary>
    public const string ExportTag = "export";

    /// <summary>Tag: the NBD command (<c>read</c>, <c>write</c>, <c>write_zeroes</c>, <c>trim</c>, <c>flush</c>, <c>block_status</c>, <c>other</c>).</summary>
    public const string OpTag = "op";

    /// <summary>Tag of <see cref="Io"/>: <c>read</c> or <c>write</c>.</summary>
    public const string DirectionTag = "direction";

    /// <summary>Tag of <see cref="Errors"/>: the errno the client got (<c>EIO</c>, <c>ENOSPC</c>, <c>EINVAL</c>, ...).</summary>
    public const string ErrnoTag = "errno";

    /// <summary>
    /// Tag of <see cref="ConnectionsRefused"/>: <c>max-connections</c>, <c>max-negotiating</c> (the oldest handshake closed
    /// for a newcomer), <c>max-connections-per-tenant</c>, <c>handshake-timeout</c>, <c>idle-timeout</c>, <c>unknown-export</c>,
    /// <c>tls-required</c>, <c>tls-handshake</c> or <c>tls-authz</c>.
    /// </summary>
    public const string ReasonTag = "reason";

    /// <summary>Tag of <see cref="ConnectionsAccepted"/> and <see cref="ConnectionsRefused"/>: the listening endpoint (<c>127.0.0.1:10809</c>, a socket path).</summary>
    public const string EndpointTag = "endpoint";

    /// <summary>Counter (<c>{request}</c>; export, op): requests answered.</summary>
    public const string Requests = "qcow2actors.nbd.requests";

    /// <summary>Counter (<c>By</c>; export, direction): payload bytes of successful READs and WRITEs.</summary>
    public const string Io = "qcow2actors.nbd.io";

    /// <summary>Histogram (<c>s</c>; export, op): from a request being dispatched (header and payload read) to its reply being queued.</summary>
    public const string RequestDuration = "qcow2actors.nbd.request.duration";

    /// <summary>Up-down counter (<c>{request}</c>; export): requests dispatched and not yet answered (the queue depth the export sees).</summary>
    public const string RequestsInFlight = "qcow2actors.nbd.requests.in_flight";

    /// <summary>Counter (<c>{error}</c>; export, op, errno): requests answered with an error.</summary>
    public const string Errors = "qcow2actors.nbd.errors";

    /// <summary>Up-down counter (<c>{connection}</c>; export): connections past negotiation, serving the export.</summary>
    public const string Connections = "qcow2actors.nbd.connections";

    /// <summary>Counter (<c>{connection}</c>; endpoint): connections the server admitted (before negotiation).</summary>
    public const string ConnectionsAccepted = "qcow2actors.nbd.connections.accepted";

    /// <summary>
    /// Counter (<c>{connection}</c>; endpoint, reason): clients turned away: closed at once because
    /// <see cref="NbdServerOptions.MaxConnections"/> were open (<c>max-connections</c>), closed for not
    /// negotiating in time (<c>handshake-timeout</c>), closed as the oldest handshake when a newcomer came past
    /// <see cref="NbdServerOptions.MaxNegotiatingConnections"/> (<c>max-negotiating</c>), refused entry to an export
    /// of a tenant at <see cref="NbdServerOptions.MaxConnectionsPerTenant"/> (<c>max-connections-per-tenant</c>),
    /// closed for having nothing in flight for <see cref="NbdServerOptions.IdleTimeout"/> (<c>idle-timeout</c>),
    /// told an export they asked to enter (NBD_OPT_GO, NBD_OPT_EXPORT_NAME) does not exist (<c>unknown-export</c>),
    /// asking to enter one in plain text when TLS is required (<c>tls-required</c>), failing the TLS handshake, e.g.
    /// with no client certificate or one another CA signed (<c>tls-handshake</c>), or presenting a certificate the
    /// authorization list does not name (<c>tls-authz</c>).
    /// </summary>
    public const string ConnectionsRefused = "qcow2actors.nbd.connections.refused";

    /// <summary>
    /// Bucket boundaries (seconds) advised for <see cref="RequestDuration"/>: 10 µs to 10 s, about
    /// three per decade, so both page-cache hits and stalled devices land in a bucket of their own.
    /// </summary>
    public static IReadOnlyList<double> DurationBuckets { get; } =
        [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    // One meter for the process: listeners and exporters find it by name, like the runtime's own meters.
    internal static readonly Meter Meter = new(MeterName);

    internal static readonly Counter<long> RequestCounter =
        Meter.CreateCounter<long>(Requests, "{request}", "NBD requests answered, by command");

    internal static readonly Counter<long> IoCounter =
        Meter.CreateCounter<long>(Io, "By", "Payload bytes of successful NBD reads and writes");

    internal static readonly Histogram<double> DurationHistogram =
        Meter.CreateHistogram<double>(RequestDuration, "s", "Time from dispatching an NBD request to queuing its reply",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DurationBuckets });

    internal static readonly UpDownCounter<long> InFlightCounter =
        Meter.CreateUpDownCounter<long>(RequestsInFlight, "{request}", "NBD requests dispatched and not yet answered");

    internal static readonly Counter<long> ErrorCounter =
        Meter.CreateCounter<long>(Errors, "{error}", "NBD requests answered with an error, by errno");

    internal static readonly UpDownCounter<long> ConnectionCounter =
        Meter.CreateUpDownCounter<long>(Connections, "{connection}", "NBD connections serving an export");

    internal static readonly Counter<long> AcceptedCounter =
        Meter.CreateCounter<long>(ConnectionsAccepted, "{connection}", "NBD connections admitted");

    internal static readonly Counter<long> RefusedCounter =
        Meter.CreateCounter<long>(ConnectionsRefused, "{connection}", "NBD clients turned away, by reason");

    /// <summary>Counts one client turned away by the server listening on <paramref name="endPoint"/>.</summary>
    internal static void Refused(System.Net.EndPoint? endPoint, string reason)
    {
        if (RefusedCounter.Enabled)
            RefusedCounter.Add(1, new KeyValuePair<string, object?>(EndpointTag, endPoint?.ToString()), new KeyValuePair<string, object?>(ReasonTag, reason));
    }

    /// <summary>Counts one connection admitted by the server listening on <paramref name="endPoint"/>.</summary>
    internal static void Accepted(System.Net.EndPoint? endPoint)
    {
        if (AcceptedCounter.Enabled) AcceptedCounter.Add(1, new KeyValuePair<string, object?>(EndpointTag, endPoint?.ToString()));
    }
}
