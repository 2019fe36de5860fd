namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>GET /v1/cluster: this node's view of the cluster.</summary>
public sealed record ClusterReply
{
    /// <summary>This node's address (akka.tcp://q2a-host@HOST:PORT).</summary>
    public required string Self { get; init; }
    /// <summary>The cluster leader's address, when there is one.</summary>
    public string? Leader { get; init; }
    /// <summary>Every member this node knows of.</summary>
    public IReadOnlyList<ClusterMemberReply> Members { get; init; } = [];
    /// <summary>Images this node owns and serves now, as TENANT/IMAGE (also their export names).</summary>
    public IReadOnlyList<string> OwnedImages { get; init; } = [];
    /// <summary>
    /// Every image the whole cluster serves and its owner, as each node's shard region reports it (sorted by tenant,
    /// image); images of a node in <see cref="Unanswered"/> are missing.
    /// </summary>
    public IReadOnlyList<ClusterOwnerReply> Owners { get; init; } = [];
    /// <summary>Members whose shard region or node agent did not answer in time (unreachable, starting, stopping).</summary>
    public IReadOnlyList<string> Unanswered { get; init; } = [];
}

/// <summary>One cluster member.</summary>
public sealed record ClusterMemberReply
{
    /// <summary>Its address.</summary>
    public required string Address { get; init; }
    /// <summary>Akka.Cluster's member status, lower case: joining, up, leaving, exiting, down, removed, weaklyup.</summary>
    public required string Status { get; init; }
    /// <summary>True while this node's failure detector cannot reach it.</summary>
    public bool Unreachable { get; init; }
}
