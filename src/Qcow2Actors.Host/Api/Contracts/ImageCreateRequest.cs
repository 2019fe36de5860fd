namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>POST /v1/tenants/{tenant}/images: creates DATA_DIR/TENANT/NAME.qcow2 and leaves it open.</summary>
public sealed record ImageCreateRequest
{
    /// <summary>Image name: [A-Za-z0-9._-]{1,64}, not starting with '.'.</summary>
    public required string Name { get; init; }
    /// <summary>Virtual size in bytes.</summary>
    public required long Size { get; init; }
    /// <summary>Creation options as <c>q2a create -o</c> takes them, e.g. "cluster_size=4k,lazy_refcounts=on".</summary>
    public string? Options { get; init; }
}
