namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>One image served from the cluster and the node that owns it (GET /v1/cluster's <c>owners</c>).</summary>
public sealed record ClusterOwnerReply
{
    /// <summary>The image's tenant.</summary>
    public required string Tenant { get; init; }
    /// <summary>The image (file DATA_DIR/TENANT/IMAGE.qcow2, export TENANT/IMAGE).</summary>
    public required string Image { get; init; }
    /// <summary>The owner node's address (akka.tcp://q2a-host@HOST:PORT): sharding runs the image's entity there.</summary>
    public required string Node { get; init; }
    /// <summary>
    /// The export's NBD URI on the owner (nbd://HOST:PORT/TENANT/IMAGE), or null while the owner has not opened it
    /// (opening, replaying its journal, or waiting for the previous owner's lock).
    /// </summary>
    public string? Nbd { get; init; }
}
