using Akka.Actor;
using Akka.Cluster;
using Qcow2Actors.Host.Cluster;

namespace Qcow2Actors.Host.Tests.Cluster;

/// <summary>
/// Which node speaks for the cluster when a member goes (downing a refusing node, fencing a downed node's journals):
/// the side Akka's keep-majority resolver keeps, never a node that sees itself alone.
/// </summary>
public sealed class KeepMajoritySideTests
{
    private static Address Node(int port) => new("akka.tcp", "q2a-host", "127.0.0.1", port);

    private static readonly Address A = Node(4051), B = Node(4052), C = Node(4053);

    private static (Address, MemberStatus)[] Up(params Address[] nodes) => [.. nodes.Select(n => (n, MemberStatus.Up))];

    [Fact]
    public void Two_of_three_that_reach_each_other_speak_for_the_cluster_when_the_third_goes()
    {
        Assert.True(KeepMajoritySide.Holds(Up(A, B, C), new HashSet<Address> { C }, A, C));
        // An operator's down of a member still reachable: the same two are the majority.
        Assert.True(KeepMajoritySide.Holds(Up(A, B, C), new HashSet<Address>(), A, C));
    }

    [Fact]
    public void A_node_resumed_from_a_pause_that_sees_the_others_unreachable_or_downed_with_it_speaks_for_nobody()
    {
        // What CI caught: the paused owner, once resumed, saw both survivors unreachable and downed them in its own
        // view; fencing them from there turned a live owner's image read-only.
        Assert.False(KeepMajoritySide.Holds([(A, MemberStatus.Up), (B, MemberStatus.Up), (C, MemberStatus.Down)], new HashSet<Address> { B, C }, A, C));
        // Its resolver downed both survivors in one decision, only one of them seen unreachable: the other, downed
        // with it, still counts against it.
        Assert.False(KeepMajoritySide.Holds([(A, MemberStatus.Up), (B, MemberStatus.Down), (C, MemberStatus.Down)], new HashSet<Address> { C }, A, C));
        Assert.False(KeepMajoritySide.Holds([(A, MemberStatus.Up), (B, MemberStatus.Down), (C, MemberStatus.Down)], new HashSet<Address> { C }, A, B));
    }

    [Fact]
    public void A_node_that_is_itself_downed_or_leaving_speaks_for_nobody()
    {
        Assert.False(KeepMajoritySide.Holds([(A, MemberStatus.Down), (B, MemberStatus.Up), (C, MemberStatus.Up)], new HashSet<Address>(), A, C));
        Assert.False(KeepMajoritySide.Holds([(A, MemberStatus.Leaving), (B, MemberStatus.Up), (C, MemberStatus.Up)], new HashSet<Address>(), A, C));
    }

    [Fact]
    public void Of_two_equal_halves_the_one_with_the_lowest_address_is_kept()
    {
        Assert.True(KeepMajoritySide.Holds(Up(A, B), new HashSet<Address> { B }, A, B));
        Assert.False(KeepMajoritySide.Holds(Up(A, B), new HashSet<Address> { A }, B, A));
    }

    [Fact]
    public void Members_still_joining_are_not_counted_and_members_already_down_are_counted_but_not_reached()
    {
        var d = Node(4054);
        // Joining members do not make up a majority (keep-majority leaves them out too) ...
        Assert.True(KeepMajoritySide.Holds([(A, MemberStatus.Up), (B, MemberStatus.Up), (C, MemberStatus.Up), (d, MemberStatus.Joining), (Node(4055), MemberStatus.Joining)],
            new HashSet<Address> { C }, A, C));
        // ... one already downed, not yet removed, is on neither side: A and B are half of four, with the lowest address ...
        Assert.True(KeepMajoritySide.Holds([(A, MemberStatus.Up), (B, MemberStatus.Up), (C, MemberStatus.Up), (d, MemberStatus.Down)], new HashSet<Address> { C }, A, C));
        // ... and half without the lowest address (C, the one going) is not kept.
        Assert.False(KeepMajoritySide.Holds([(Node(4060), MemberStatus.Up), (Node(4061), MemberStatus.Up), (C, MemberStatus.Up), (d, MemberStatus.Down)],
            new HashSet<Address> { C }, Node(4060), C));
        // Once removed it is gone from the count: two of three.
        Assert.True(KeepMajoritySide.Holds(Up(A, B, C), new HashSet<Address> { C }, A, C));
    }
}
