using Akka.Actor;
using Akka.Cluster;
using Akka.Cluster.Sharding;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Cluster.Ownership;

/// <summary>
/// The cluster-wide owner list: every member's image shard region is asked for its shards and their entities
/// (sharding's <see cref="GetShardRegionState"/>: an entity running on a node means that node owns the image) and
/// every member's <see cref="NodeAgent"/> for the NBD URIs of the exports it serves.
/// </summary>
internal static class ClusterOwners
{
    /// <summary>The owners (sorted by tenant, image) and the members that did not answer within <paramref name="timeout"/>.</summary>
    public static async Task<(IReadOnlyList<ClusterOwnerReply> Owners, IReadOnlyList<string> Unanswered)> CollectAsync(
        ActorSystem system, IActorRef region, TimeSpan timeout)
    {
        var state = Akka.Cluster.Cluster.Get(system).State;
        var unreachable = state.Unreachable.Select(m => m.Address).ToHashSet();
        var asked = state.Members
            .Where(m => m.Status is MemberStatus.Up or MemberStatus.Leaving or MemberStatus.Exiting or MemberStatus.WeaklyUp)
            .Select(m => m.Address)
            .ToList();
        var unanswered = asked.Where(unreachable.Contains).Select(a => a.ToString()).ToList();
        var replies = await Task.WhenAll(asked.Where(a => !unreachable.Contains(a)).Select(async address =>
        {
            try
            {
                var regionState = system.ActorSelection(new RootActorPath(address) / region.Path.Elements)
                    .Ask<CurrentShardRegionState>(GetShardRegionState.Instance, timeout);
                var report = system.ActorSelection(NodeAgent.PathOn(address)).Ask<NodeReport>(new NodeReportRequest(), timeout);
                return (Address: address, Region: await regionState.ConfigureAwait(false), Report: await report.ConfigureAwait(false));
            }
            catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
            {
                return (Address: address, Region: (CurrentShardRegionState?)null, Report: (NodeReport?)null);
            }
        })).ConfigureAwait(false);
        var owners = new List<ClusterOwnerReply>();
        foreach (var (address, regionState, report) in replies)
        {
            if (regionState is null || report is null)
            {
                unanswered.Add(address.ToString());
                continue;
            }
            var served = report.Images.ToDictionary(i => i.Id, i => i.Nbd, StringComparer.Ordinal);
            foreach (var id in regionState.Shards.SelectMany(s => s.EntityIds))
            {
                var (tenant, image) = ImageEntity.Split(id);
                owners.Add(new ClusterOwnerReply { Tenant = tenant, Image = image, Node = address.ToString(), Nbd = served.GetValueOrDefault(id) });
            }
        }
        return ([.. owners.OrderBy(o => o.Tenant, StringComparer.Ordinal).ThenBy(o => o.Image, StringComparer.Ordinal).ThenBy(o => o.Node, StringComparer.Ordinal)],
            [.. unanswered.Order(StringComparer.Ordinal)]);
    }

    /// <summary>
    /// Asks every reachable member's agent to un-serve <paramref name="entityId"/>; the answer of the node where it ran
    /// (null when none did), and the members that did not answer.
    /// </summary>
    public static async Task<(UnserveReply? Reply, IReadOnlyList<string> Unanswered)> UnserveAsync(ActorSystem system, string entityId, TimeSpan timeout)
    {
        var state = Akka.Cluster.Cluster.Get(system).State;
        var unreachable = state.Unreachable.Select(m => m.Address).ToHashSet();
        var asked = state.Members.Where(m => m.Status is MemberStatus.Up or MemberStatus.Leaving or MemberStatus.WeaklyUp).Select(m => m.Address).ToList();
        var unanswered = asked.Where(unreachable.Contains).Select(a => a.ToString()).ToList();
        var replies = await Task.WhenAll(asked.Where(a => !unreachable.Contains(a)).Select(async address =>
        {
            try
            {
                return (Address: address, Reply: (UnserveReply?)await system.ActorSelection(NodeAgent.PathOn(address))
                    .Ask<UnserveReply>(new UnserveRequest(entityId), timeout).ConfigureAwait(false));
            }
            catch (Exception ex) when (ex is AskTimeoutException or TaskCanceledException)
            {
                return (Address: address, Reply: null);
            }
        })).ConfigureAwait(false);
        unanswered.AddRange(replies.Where(r => r.Reply is null).Select(r => r.Address.ToString()));
        return (replies.Select(r => r.Reply).FirstOrDefault(r => r is { Found: true }), unanswered);
    }
}
