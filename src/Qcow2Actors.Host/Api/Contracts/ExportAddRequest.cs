namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>POST /v1/exports: serves an image over NBD (it is opened if closed).</summary>
public sealed record ExportAddRequest
{
    /// <summary>Tenant of the image.</summary>
    public required string Tenant { get; init; }
    /// <summary>Image name.</summary>
    public required string Image { get; init; }
    /// <summary>Export name; default "TENANT/IMAGE".</summary>
    public string? Name { get; init; }
    /// <summary>True to serve it read-only.</summary>
    public bool? ReadOnly { get; init; }
}
