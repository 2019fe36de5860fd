namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>POST /v1/cluster/images: serve an image of the shared data directory from the cluster (one owner node at a time).</summary>
public sealed record ClusterImageRequest
{
    /// <summary>The tenant (the image file is DATA_DIR/TENANT/IMAGE.qcow2).</summary>
    public required string Tenant { get; init; }
    /// <summary>The image; its export is named TENANT/IMAGE on whichever node owns it.</summary>
    public required string Image { get; init; }
}
