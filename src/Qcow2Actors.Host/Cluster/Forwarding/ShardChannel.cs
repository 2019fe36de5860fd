using Akka.Actor;
using Akka.Cluster.Sharding;

namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>
/// The way to an image's owner in a cluster: a sharding envelope to the image's entity through this node's shard
/// region (Akka.Remote to the owner's node), the reply straight back. While the last known owner's node is
/// unreachable, nothing is sent (it would be lost); once that node is removed the region routes to the new owner.
/// </summary>
internal sealed class ShardChannel(IActorRef region, string entityId, OwnerWatch watch) : IOwnerChannel
{
    private volatile string? _owner;

    /// <inheritdoc />
    public async Task<ForwardedReply> SendAsync(ForwardedRequest request, CancellationToken cancellationToken)
    {
        var owner = _owner;
        if (owner is not null)
        {
            switch (watch.StateOf(owner))
            {
                case OwnerWatch.NodeState.Unreachable:
                    throw new OwnerUnavailableException($"owner {owner} is unreachable");
                case OwnerWatch.NodeState.Removed:
                    // Back off once before sending: the region re-resolves the shard's home after the removal.
                    _owner = null;
                    throw new OwnerUnavailableException($"owner {owner} left the cluster");
            }
        }
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, owner is null ? CancellationToken.None : watch.GoneToken(owner));
        try
        {
            var reply = await region.Ask<ForwardedReply>(new ShardingEnvelope(entityId, request), Timeout.InfiniteTimeSpan, linked.Token).ConfigureAwait(false);
            _owner = reply.Owner;
            return reply;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && owner is not null)
        {
            throw new OwnerUnavailableException($"owner {owner} became unreachable or left while the request was in flight");
        }
    }
}

/// <summary>The owner cannot be reached now; the request is sent again after a pause.</summary>
internal sealed class OwnerUnavailableException(string message) : Exception(message);
