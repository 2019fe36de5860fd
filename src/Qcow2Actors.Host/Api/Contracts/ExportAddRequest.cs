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
    /// <summary>
    /// Persistent dirty bitmaps of the image to offer as NBD metadata contexts <c>qemu:dirty-bitmap:NAME</c>
    /// (as qemu-nbd's <c>-B</c>), listed in this order; a missing or inconsistent one is 400 bad-request.
    /// </summary>
    public IReadOnlyList<string>? Bitmaps { get; init; }
    /// <summary>True to offer the NBD metadata context <c>qemu:allocation-depth</c> (as qemu-nbd's <c>-A</c>).</summary>
    public bool? AllocationDepth { get; init; }
    /// <summary>
    /// Record every write, zero, trim, flush and FUA the guest sends into this new crash-lab log (as
    /// <c>q2a serve --record</c>), from an internal snapshot <c>q2a-record-yyyyMMddTHHmmssZ</c> taken now. A file
    /// name in the tenant's directory on the host (A-Z a-z 0-9 . _ -, not ending in .qcow2 or .journal); an
    /// operator may give an absolute path instead. An existing file is 409 record-exists. The recording ends,
    /// the log closed, when the export is removed or the host stops; after a restart the export is served
    /// without recording.
    /// </summary>
    public string? Record { get; init; }
}
