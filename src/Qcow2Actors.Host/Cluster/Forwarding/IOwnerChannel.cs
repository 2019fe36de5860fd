namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>The way a proxy export reaches the current owner of its image (the shard region in a cluster).</summary>
internal interface IOwnerChannel
{
    /// <summary>
    /// Sends <paramref name="request"/> to the owner and returns its reply. Throws (timeout, cancellation) when no
    /// answer came: the owner died, moved, or the message was lost in a hand-off.
    /// </summary>
    Task<ForwardedReply> SendAsync(ForwardedRequest request, CancellationToken cancellationToken);
}
