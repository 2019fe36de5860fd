using System.Threading.RateLimiting;

namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// The two answers a throttle group gives: admitted (the request was charged to the group), or not:
/// from an attempt, the request would have to wait; from a wait, the export left the group meanwhile,
/// so the request is checked against the export's current groups instead. Nothing is held, so both
/// are shared and disposing them is a no-op.
/// </summary>
internal sealed class ThrottleLease : RateLimitLease
{
    public static readonly ThrottleLease Admitted = new(true);
    public static readonly ThrottleLease NotAdmitted = new(false);

    private ThrottleLease(bool acquired) => IsAcquired = acquired;

    public override bool IsAcquired { get; }

    public override IEnumerable<string> MetadataNames => [];

    public override bool TryGetMetadata(string metadataName, out object? metadata)
    {
        metadata = null;
        return false;
    }
}
