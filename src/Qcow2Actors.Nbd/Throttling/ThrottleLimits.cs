using System.Globalization;

namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// The limits of one <see cref="ThrottleGroup"/>, with QEMU's throttle-group meaning: operations
/// per second (<c>iops</c>) and bytes per second (<c>bps</c>), either in total or split into
/// read and write, plus a burst rate allowed for <see cref="BurstLength"/>. Zero means unlimited.
/// </summary>
/// <remarks>
/// <para>
/// As in QEMU, a request is admitted while the group's buckets are not over their size, and is
/// then charged in full: a request larger than a bucket is never refused, it delays the requests
/// behind it instead. Without a burst rate a bucket holds a tenth of a second of its rate, so short
/// bursts pass unthrottled; with one (<see cref="BurstIops"/>, <see cref="BurstBps"/>) up to
/// burst-rate x <see cref="BurstLength"/> units pass at the burst rate before the steady rate applies.
/// </para>
/// <para>
/// Reads are charged as reads; writes, write-zeroes and trims as writes (their full length in bytes,
/// as QEMU's throttle filter charges them); flush and block status are not throttled.
/// </para>
/// <para>
/// <see cref="Validate"/> refuses what QEMU refuses: a total limit together with a read or write
/// limit of the same kind, a burst rate without its steady rate or below it, a burst length without
/// a burst rate, negative values, and values above <see cref="MaxValue"/>.
/// </para>
/// </remarks>
public sealed record ThrottleLimits
{
    /// <summary>Largest value any rate may have (QEMU's bound, 10^15).</summary>
    public const long MaxValue = 1_000_000_000_000_000;

    /// <summary>No limits at all.</summary>
    public static ThrottleLimits Unlimited { get; } = new();

    /// <summary>Operations per second, reads and writes together (QEMU <c>iops-total</c>).</summary>
    public long Iops { get; init; }

    /// <summary>Bytes per second, reads and writes together (QEMU <c>bps-total</c>).</summary>
    public long Bps { get; init; }

    /// <summary>Read operations per second (QEMU <c>iops-read</c>); not with <see cref="Iops"/>.</summary>
    public long ReadIops { get; init; }

    /// <summary>Write operations per second, zeroes and trims included (QEMU <c>iops-write</c>); not with <see cref="Iops"/>.</summary>
    public long WriteIops { get; init; }

    /// <summary>Bytes read per second (QEMU <c>bps-read</c>); not with <see cref="Bps"/>.</summary>
    public long ReadBps { get; init; }

    /// <summary>Bytes written per second, zeroes and trims included (QEMU <c>bps-write</c>); not with <see cref="Bps"/>.</summary>
    public long WriteBps { get; init; }

    /// <summary>
    /// Operations per second allowed during a burst (QEMU <c>iops-*-max</c>): applies to each iops
    /// limit that is set (total, or read and write) and must be at least as large as each of them.
    /// </summary>
    public long BurstIops { get; init; }

    /// <summary>Bytes per second allowed during a burst (QEMU <c>bps-*-max</c>), for each bps limit that is set.</summary>
    public long BurstBps { get; init; }

    /// <summary>
    /// How long a burst may last at the burst rate (QEMU <c>*-max-length</c>); zero means one second,
    /// QEMU's default. Only with <see cref="BurstIops"/> or <see cref="BurstBps"/>.
    /// </summary>
    public TimeSpan BurstLength { get; init; }

    /// <summary>True when no limit is set: a group with these limits admits everything at once.</summary>
    public bool IsUnlimited => Iops == 0 && Bps == 0 && ReadIops == 0 && WriteIops == 0 && ReadBps == 0 && WriteBps == 0;

    /// <summary>The burst length in force: <see cref="BurstLength"/>, or one second when it is zero.</summary>
    public TimeSpan EffectiveBurstLength => BurstLength == TimeSpan.Zero ? TimeSpan.FromSeconds(1) : BurstLength;

    /// <summary>The first thing wrong with these limits, as one line naming the field; null when they are valid.</summary>
    public string? Problem()
    {
        foreach (var (name, value) in Fields())
        {
            if (value < 0) return $"{name} must not be negative (got {value.ToString(CultureInfo.InvariantCulture)})";
            if (value > MaxValue) return $"{name} must be at most {MaxValue.ToString(CultureInfo.InvariantCulture)} (got {value.ToString(CultureInfo.InvariantCulture)})";
        }
        if (BurstLength < TimeSpan.Zero) return $"burst-length must not be negative (got {BurstLength.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s)";
        if (Iops != 0 && (ReadIops != 0 || WriteIops != 0)) return "iops cannot be combined with read-iops or write-iops";
        if (Bps != 0 && (ReadBps != 0 || WriteBps != 0)) return "bps cannot be combined with read-bps or write-bps";
        if (BurstIops != 0 && BurstProblem("burst-iops", BurstIops, ("iops", Iops), ("read-iops", ReadIops), ("write-iops", WriteIops)) is { } iops) return iops;
        if (BurstBps != 0 && BurstProblem("burst-bps", BurstBps, ("bps", Bps), ("read-bps", ReadBps), ("write-bps", WriteBps)) is { } bps) return bps;
        if (BurstLength != TimeSpan.Zero && BurstIops == 0 && BurstBps == 0) return "burst-length needs burst-iops or burst-bps";
        foreach (var (name, value) in Fields())
        {
            // QEMU's bound on a bucket's size (burst rate x length) keeps the arithmetic exact.
            if (name.StartsWith("burst", StringComparison.Ordinal) && value > 0 && EffectiveBurstLength.TotalSeconds > (double)MaxValue / value)
                return $"burst-length {EffectiveBurstLength.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s is too long for {name} {value.ToString(CultureInfo.InvariantCulture)}";
        }
        return null;
    }

    /// <summary>Throws when <see cref="Problem"/> finds something wrong.</summary>
    /// <exception cref="ArgumentException">The limits are invalid; the message is one line naming the field.</exception>
    public void Validate()
    {
        if (Problem() is { } problem) throw new ArgumentException(problem);
    }

    private IEnumerable<(string Name, long Value)> Fields()
    {
        yield return ("iops", Iops);
        yield return ("bps", Bps);
        yield return ("read-iops", ReadIops);
        yield return ("write-iops", WriteIops);
        yield return ("read-bps", ReadBps);
        yield return ("write-bps", WriteBps);
        yield return ("burst-iops", BurstIops);
        yield return ("burst-bps", BurstBps);
    }

    private static string? BurstProblem(string burstName, long burst, params (string Name, long Value)[] rates)
    {
        if (rates.All(r => r.Value == 0)) return $"{burstName} needs {rates[0].Name} (or {rates[1].Name}/{rates[2].Name})";
        foreach (var (name, value) in rates)
        {
            if (value != 0 && burst < value)
                return $"{burstName} {burst.ToString(CultureInfo.InvariantCulture)} is below {name} {value.ToString(CultureInfo.InvariantCulture)}";
        }
        return null;
    }
}
