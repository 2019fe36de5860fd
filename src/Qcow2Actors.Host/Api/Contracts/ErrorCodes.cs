namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>The stable <see cref="ErrorReply.Code"/> values and the HTTP status each comes with.</summary>
public static class ErrorCodes
{
    /// <summary>400: a malformed body, a bad name, size or option.</summary>
    public const string BadRequest = "bad-request";
    /// <summary>404: no tenant of that name.</summary>
    public const string TenantNotFound = "tenant-not-found";
    /// <summary>404: no image of that name in the tenant.</summary>
    public const string ImageNotFound = "image-not-found";
    /// <summary>404: no export of that name.</summary>
    public const string ExportNotFound = "export-not-found";
    /// <summary>404: no snapshot of that id or name in the image.</summary>
    public const string SnapshotNotFound = "snapshot-not-found";
    /// <summary>404: the tenant has no token of that id.</summary>
    public const string TokenNotFound = "token-not-found";
    /// <summary>401: no credentials, or credentials the host does not know (TCP; a token anywhere).</summary>
    public const string Unauthorized = "unauthorized";
    /// <summary>403: known caller, not allowed (a uid not allowed on the socket, a tenant token on host administration, a revoked tenant).</summary>
    public const string Forbidden = "forbidden";
    /// <summary>409: a tenant of that name exists.</summary>
    public const string TenantExists = "tenant-exists";
    /// <summary>409: an image of that name exists in the tenant.</summary>
    public const string ImageExists = "image-exists";
    /// <summary>409: an export of that name exists.</summary>
    public const string ExportExists = "export-exists";
    /// <summary>409: a snapshot of that name exists in the image.</summary>
    public const string SnapshotExists = "snapshot-exists";
    /// <summary>409: the tenant still has images.</summary>
    public const string TenantNotEmpty = "tenant-not-empty";
    /// <summary>409: the image is exported; remove its exports first.</summary>
    public const string ImageExported = "image-exported";
    /// <summary>409: the recording log an export was to write exists (a recording is never overwritten).</summary>
    public const string RecordExists = "record-exists";
    /// <summary>409: the image is busy in a way the operation cannot work around.</summary>
    public const string ImageInUse = "image-in-use";
    /// <summary>409: the tenant's byte quota would be passed.</summary>
    public const string QuotaExceeded = "quota-exceeded";
    /// <summary>409: the tenant has as many images as it may.</summary>
    public const string ImageLimit = "image-limit";
    /// <summary>409: the image is in a failed state (the reason is in the message).</summary>
    public const string ImageFailed = "image-failed";
    /// <summary>501: this build of the host does not implement the operation.</summary>
    public const string NotImplemented = "not-implemented";
    /// <summary>500: an unexpected failure (logged by the host).</summary>
    public const string Internal = "internal";
}
