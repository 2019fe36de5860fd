using Akka.Actor;
using Akka.Cluster;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Qcow2Actors.Host.Cluster.Ownership;

/// <summary>
/// Fences a downed node's image journals about a second after it is downed: when the cluster downs a member (the
/// split-brain resolver, or an operator), every survivor that sees it and is on keep-majority's side (when it sees the
/// down and again <see cref="ConfirmAfter"/> later) takes the next owner generation of each journal that member holds,
/// so from then on the downed node can commit nothing: its next flush fails with EIO and its image turns read-only,
/// even if it is only paused (SIGSTOP, a long GC) and resumes before it learns it was downed. What it commits in the
/// second before is in the journal the next owner replays.
/// </summary>
/// <remarks>
/// Without this the generation moved only when the next owner opened the image, which the image's OFD lock holds
/// back while the paused owner lives: in between, the paused node could still acknowledge flushes after the cluster
/// had declared it gone. The update matches rows by owner, so it never fences an owner that has already taken a
/// journal over, and running it on every survivor is harmless (the second finds nothing). Its append and delete
/// checks read the generation row <c>FOR SHARE</c>; a paused node stopped inside such a transaction holds the update
/// back, so it waits at most <see cref="LockTimeout"/> per try and tries again.
/// </remarks>
internal sealed class DownedNodeFence : ReceiveActor
{
    private static readonly TimeSpan LockTimeout = TimeSpan.FromSeconds(2);
    private const int Tries = 5;

    private sealed record Fenced(Address Node, int Journals);
    private sealed record Failed(Address Node, int Try, string Reason);

    /// <summary>
    /// How long after a member is downed this node confirms it still speaks for the cluster before it fences. A node
    /// that resumed from a pause can see the others downed in its own view, in the same decision that downs itself
    /// (Akka's resolver took <c>DownIndirectlyConnected</c>, naming itself and both survivors, and published no
    /// <c>MemberDowned</c> of itself): it starts its shutdown within ~100 ms, so a second look finds it leaving.
    /// </summary>
    internal static readonly TimeSpan ConfirmAfter = TimeSpan.FromSeconds(1);

    private sealed record Confirm(UniqueAddress Node);

    public DownedNodeFence(string connectionString, ILogger log, TimeProvider time)
    {
        var system = Context.System;
        var cluster = Akka.Cluster.Cluster.Get(system);
        var self = cluster.SelfAddress;
        // Only keep-majority's side speaks for the cluster, and only while it runs: a node that is itself downed,
        // leaving or shutting down, or that sees itself cut off, fences nobody (it would turn live owners' images
        // read-only). Asked when the down is seen and again ConfirmAfter later: the first look still has the members
        // a resumed node found unreachable (they may be removed by the second), the second sees its shutdown.
        string? Declined(UniqueAddress node)
        {
            if (cluster.IsTerminated || CoordinatedShutdown.Get(system).ShutdownReason is not null) return "this node is shutting down";
            var state = cluster.State;
            // A new process at the same address (restarted within the wait) owns its journals under the same name.
            if (state.Members.Any(m => m.Address == node.Address && m.UniqueAddress.Uid != node.Uid)) return "a new incarnation of it is a member";
            return KeepMajoritySide.Holds(state, self, node.Address) ? null : "this node is not on keep-majority's side";
        }
        void Decline(UniqueAddress node, string why) =>
            log.LogInformation("cluster: not fencing the journals of downed node {Address}: {Reason}", node.Address, why);
        Receive<ClusterEvent.MemberDowned>(e =>
        {
            if (e.Member.Address == self) return;
            var node = e.Member.UniqueAddress;
            if (Declined(node) is { } why) Decline(node, why);
            else Task.Delay(ConfirmAfter, time).PipeTo(Self, success: () => new Confirm(node));
        });
        Receive<Confirm>(c =>
        {
            if (Declined(c.Node) is { } why) Decline(c.Node, why);
            else Fence(connectionString, c.Node.Address, self, 1);
        });
        Receive<Fenced>(f =>
        {
            if (f.Journals > 0)
                log.LogWarning("cluster: fenced {Count} image journal(s) of downed node {Address}: its appends are refused from now on", f.Journals, f.Node);
        });
        Receive<Failed>(f =>
        {
            log.LogWarning("cluster: fencing the journals of downed node {Address} failed (try {Try} of {Tries}): {Reason}", f.Node, f.Try, Tries, f.Reason);
            if (f.Try < Tries) Fence(connectionString, f.Node, self, f.Try + 1);
        });
        Receive<ClusterEvent.CurrentClusterState>(_ => { });
        cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsSnapshot, typeof(ClusterEvent.MemberDowned));
    }

    private void Fence(string connectionString, Address node, Address self, int attempt) =>
        FenceAsync(connectionString, node.ToString(), $"fenced: {node} downed, seen by {self}")
            .PipeTo(Self, success: n => new Fenced(node, n), failure: ex => new Failed(node, attempt, ex.Message));

    /// <summary>Takes the next generation of every journal whose current owner is <paramref name="owner"/>; returns how many.</summary>
    internal static async Task<int> FenceAsync(string connectionString, string owner, string fencedBy)
    {
        await using var db = NpgsqlDataSource.Create(connectionString);
        await using var connection = await db.OpenConnectionAsync().ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync().ConfigureAwait(false);
        await using (var timeout = new NpgsqlCommand(
            $"SET LOCAL lock_timeout = '{(int)LockTimeout.TotalMilliseconds}ms'", connection, transaction))
            await timeout.ExecuteNonQueryAsync().ConfigureAwait(false);
        int fenced;
        await using (var command = new NpgsqlCommand(
            $"UPDATE {FencedSqlJournal.GenerationTable} SET generation = generation + 1, owner = $2, taken_at = now() WHERE owner = $1",
            connection, transaction))
        {
            command.Parameters.Add(new NpgsqlParameter { Value = owner });
            command.Parameters.Add(new NpgsqlParameter { Value = fencedBy });
            fenced = await command.ExecuteNonQueryAsync().ConfigureAwait(false);
        }
        await transaction.CommitAsync().ConfigureAwait(false);
        return fenced;
    }

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);

    public static Props Props(string connectionString, ILogger log, TimeProvider time) =>
        Akka.Actor.Props.Create(() => new DownedNodeFence(connectionString, log, time));
}
