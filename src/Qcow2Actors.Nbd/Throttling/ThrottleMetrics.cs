using System.Diagnostics.Metrics;

namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// The throttle's instrument on the "Qcow2Actors.Nbd" meter (the other NBD instruments live with the
/// server; a listener subscribing to the meter name sees both).
/// </summary>
internal static class ThrottleMetrics
{
    /// <summary>The meter name every NBD instrument shares.</summary>
    public const string MeterName = "Qcow2Actors.Nbd";

    private static readonly Meter Meter = new(MeterName);

    /// <summary>
    /// Seconds each throttled request (read, write, write-zeroes, trim) waited in its export's throttle
    /// groups, zero when it went at once; tagged with the export's name.
    /// </summary>
    public static readonly Histogram<double> Delay = Meter.CreateHistogram<double>(
        "q2a.nbd.throttle.delay", unit: "s", description: "Time a request waited in its export's throttle groups");
}
