using Akka.Actor;
using Akka.Cluster;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// Whether a node, with the members it reaches, is the side Akka's keep-majority resolver keeps when a member goes:
/// more than half of the members, or exactly half with the member of the lowest address. Only that side speaks for
/// the cluster; a node cut off (or paused and resumed, seeing everyone else unreachable) downs and fences nobody.
/// Stricter than Akka's own count: members down but not yet removed are counted, on the other side.
/// </summary>
internal static class KeepMajoritySide
{
    /// <summary>The same question asked of the cluster's read view <paramref name="state"/> (its members and unreachable set).</summary>
    public static bool Holds(ClusterEvent.CurrentClusterState state, Address self, Address gone) =>
        Holds(state.Members.Select(m => (m.Address, m.Status)), state.Unreachable.Select(u => u.Address).ToHashSet(), self, gone);

    /// <summary>
    /// True when <paramref name="self"/> is up and it and the members it reaches, without <paramref name="gone"/>, are
    /// keep-majority's side of <paramref name="members"/>: those up or leaving (joining, weakly up and exiting ones are
    /// left out, as Akka does), <paramref name="gone"/> whatever its status, and those down but not yet removed
    /// (counted, never reached: a decision that downed several at once does not shrink the whole this side must be
    /// the most of).
    /// </summary>
    public static bool Holds(IEnumerable<(Address Address, MemberStatus Status)> members, IReadOnlySet<Address> unreachable, Address self, Address gone)
    {
        var list = members.Where(m => m.Address == gone || m.Status is MemberStatus.Up or MemberStatus.Leaving or MemberStatus.Down).ToList();
        if (!list.Any(m => m.Address == self && m.Status == MemberStatus.Up)) return false;
        var kept = list.Where(m => m.Address != gone && m.Status != MemberStatus.Down && !unreachable.Contains(m.Address)).Select(m => m.Address).ToList();
        if (kept.Count * 2 != list.Count) return kept.Count * 2 > list.Count;
        return kept.Contains(list.Select(m => m.Address).Min(Member.AddressOrdering)!);
    }
}
