using System.Text.Json;

namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>An image of a tenant.</summary>
public sealed record ImageReply
{
    /// <summary>Owning tenant.</summary>
    public required string Tenant { get; init; }
    /// <summary>Image name.</summary>
    public required string Name { get; init; }
    /// <summary>File path (DATA_DIR/TENANT/NAME.qcow2).</summary>
    public required string Path { get; init; }
    /// <summary>Guest-visible size in bytes.</summary>
    public long VirtualSize { get; init; }
    /// <summary>Bytes the image file occupies on the host.</summary>
    public long AllocatedBytes { get; init; }
    /// <summary>Open, closed or failed.</summary>
    public required ImageState State { get; init; }
    /// <summary>Why the image failed; null unless <see cref="State"/> is failed.</summary>
    public string? Reason { get; init; }
    /// <summary>Names of the exports serving the image.</summary>
    public IReadOnlyList<string> Exports { get; init; } = [];
    /// <summary>Only on GET of one image: the object <c>q2a info --output json</c> prints.</summary>
    public JsonElement? Info { get; init; }
}
