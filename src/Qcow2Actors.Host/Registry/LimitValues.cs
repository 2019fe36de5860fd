using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Nbd.Throttling;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// One throttle group's settings as the host keeps and persists them (0 = unlimited), the
/// single translation point between the API's <see cref="LimitRequest"/>/<see cref="LimitReply"/>,
/// the config file's <c>limits { }</c> block and the NBD throttle.
/// </summary>
internal sealed record LimitValues
{
    public long Iops { get; init; }
    public long Bps { get; init; }
    public long ReadIops { get; init; }
    public long WriteIops { get; init; }
    public long ReadBps { get; init; }
    public long WriteBps { get; init; }
    public long BurstIops { get; init; }
    public long BurstBps { get; init; }
    public int BurstSeconds { get; init; }

    /// <summary>From the API; a negative value is a bad request naming the field.</summary>
    public static LimitValues From(LimitRequest request)
    {
        var values = new LimitValues
        {
            Iops = request.Iops ?? 0, Bps = request.Bps ?? 0, ReadIops = request.ReadIops ?? 0, WriteIops = request.WriteIops ?? 0,
            ReadBps = request.ReadBps ?? 0, WriteBps = request.WriteBps ?? 0, BurstIops = request.BurstIops ?? 0,
            BurstBps = request.BurstBps ?? 0, BurstSeconds = request.BurstSeconds ?? 0,
        };
        values.Validate();
        return values;
    }

    /// <summary>Refuses what QEMU's throttle groups refuse (negative values, a burst without its rate, ...), naming the field.</summary>
    public void Validate()
    {
        foreach (var (name, value) in Fields())
            if (value < 0) throw HostApiException.BadRequest($"{name} must not be negative ({value})");
        if (ToThrottle().Problem() is { } problem) throw HostApiException.BadRequest(problem);
    }

    /// <summary>The NBD throttle's limits (a burst length of 0: QEMU's default of one second).</summary>
    public ThrottleLimits ToThrottle() => new()
    {
        Iops = Iops, Bps = Bps, ReadIops = ReadIops, WriteIops = WriteIops, ReadBps = ReadBps, WriteBps = WriteBps,
        BurstIops = BurstIops, BurstBps = BurstBps, BurstLength = TimeSpan.FromSeconds(BurstSeconds),
    };

    private IEnumerable<(string Name, long Value)> Fields() =>
    [
        ("iops", Iops), ("bps", Bps), ("readIops", ReadIops), ("writeIops", WriteIops), ("readBps", ReadBps),
        ("writeBps", WriteBps), ("burstIops", BurstIops), ("burstBps", BurstBps), ("burstSeconds", BurstSeconds),
    ];

    public LimitReply ToReply(LimitScope scope, string target) => new()
    {
        Scope = scope, Target = target,
        Iops = Iops, Bps = Bps, ReadIops = ReadIops, WriteIops = WriteIops, ReadBps = ReadBps, WriteBps = WriteBps,
        BurstIops = BurstIops, BurstBps = BurstBps, BurstSeconds = BurstSeconds,
    };
}
