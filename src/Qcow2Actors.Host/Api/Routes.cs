namespace Qcow2Actors.Host.Api;

/// <summary>
/// The control API's route templates (for the host's endpoint mapping) and the helpers that fill
/// them in (for clients). Names in paths are escaped per segment; an export name keeps its '/'.
/// </summary>
public static class Routes
{
    /// <summary>GET: <see cref="Contracts.HealthReply"/>.</summary>
    public const string Health = "/v1/health";
    /// <summary>GET: the OpenAPI document.</summary>
    public const string OpenApi = "/openapi/v1.json";
    /// <summary>GET: Prometheus text.</summary>
    public const string Metrics = "/metrics";

    /// <summary>GET: <see cref="Contracts.ClusterReply"/> (cluster mode).</summary>
    public const string Cluster = "/v1/cluster";
    /// <summary>POST: serve an image from the cluster (<see cref="Contracts.ClusterImageRequest"/>; cluster mode).</summary>
    public const string ClusterImages = "/v1/cluster/images";
    /// <summary>DELETE: stop serving an image from the cluster (its owner closes it clean; sharding forgets it; cluster mode).</summary>
    public const string ClusterImage = ClusterImages + "/{tenant}/{image}";
    /// <summary>POST: this node leaves the cluster gracefully, hands its images off clean and exits 0 (cluster mode; 204).</summary>
    public const string ClusterDrain = "/v1/cluster/drain";

    /// <summary>POST (create), GET (list).</summary>
    public const string Tenants = "/v1/tenants";
    /// <summary>GET, PATCH, DELETE one tenant.</summary>
    public const string Tenant = "/v1/tenants/{tenant}";
    /// <summary>POST: revoke a tenant (its tokens refused, its NBD clients cut off).</summary>
    public const string TenantRevoke = Tenant + "/revoke";
    /// <summary>POST: restore a revoked tenant.</summary>
    public const string TenantRestore = Tenant + "/restore";
    /// <summary>POST (create), GET (list) a tenant's API tokens.</summary>
    public const string TenantTokens = Tenant + "/tokens";
    /// <summary>DELETE (revoke) one token.</summary>
    public const string TenantToken = TenantTokens + "/{id}";

    /// <summary>GET every image (optionally ?tenant=T).</summary>
    public const string Images = "/v1/images";
    /// <summary>POST (create), GET (list) a tenant's images.</summary>
    public const string TenantImages = "/v1/tenants/{tenant}/images";
    /// <summary>GET (with info), DELETE one image.</summary>
    public const string Image = "/v1/tenants/{tenant}/images/{image}";
    /// <summary>POST: open the image.</summary>
    public const string ImageOpen = Image + "/open";
    /// <summary>POST: close the image.</summary>
    public const string ImageClose = Image + "/close";
    /// <summary>POST: check the image.</summary>
    public const string ImageCheck = Image + "/check";
    /// <summary>POST: grow the image.</summary>
    public const string ImageResize = Image + "/resize";

    /// <summary>GET (list), POST (create) snapshots.</summary>
    public const string Snapshots = Image + "/snapshots";
    /// <summary>DELETE one snapshot.</summary>
    public const string Snapshot = Snapshots + "/{snapshot}";
    /// <summary>POST: revert the image to the snapshot.</summary>
    public const string SnapshotApply = Snapshot + "/apply";

    /// <summary>POST (add), GET (list) exports.</summary>
    public const string Exports = "/v1/exports";
    /// <summary>DELETE one export (the name may contain '/').</summary>
    public const string Export = "/v1/exports/{**name}";

    /// <summary>GET every limit.</summary>
    public const string Limits = "/v1/limits";
    /// <summary>PUT, DELETE an export's limit.</summary>
    public const string ExportLimit = "/v1/limits/exports/{**name}";
    /// <summary>PUT, DELETE a tenant's limit.</summary>
    public const string TenantLimit = "/v1/limits/tenants/{tenant}";

    /// <summary>/v1/cluster/images/T/I.</summary>
    public static string ClusterImagePath(string tenant, string image) => $"{ClusterImages}/{Escape(tenant)}/{Escape(image)}";

    /// <summary>/v1/tenants/T.</summary>
    public static string TenantPath(string tenant) => $"{Tenants}/{Escape(tenant)}";

    /// <summary>/v1/tenants/T/revoke or /v1/tenants/T/restore.</summary>
    public static string TenantActionPath(string tenant, bool revoke) => $"{TenantPath(tenant)}/{(revoke ? "revoke" : "restore")}";

    /// <summary>/v1/tenants/T/tokens[/ID].</summary>
    public static string TenantTokensPath(string tenant, string? id = null) => $"{TenantPath(tenant)}/tokens" + (id is null ? "" : "/" + Escape(id));

    /// <summary>/v1/tenants/T/images.</summary>
    public static string TenantImagesPath(string tenant) => $"{TenantPath(tenant)}/images";

    /// <summary>/v1/images or /v1/images?tenant=T.</summary>
    public static string ImagesPath(string? tenant = null) => tenant is null ? Images : $"{Images}?tenant={Escape(tenant)}";

    /// <summary>/v1/tenants/T/images/I, plus <paramref name="action"/> ("open", "close", "check", "resize", "snapshots") when given.</summary>
    public static string ImagePath(string tenant, string image, string? action = null) =>
        $"{TenantImagesPath(tenant)}/{Escape(image)}" + (action is null ? "" : "/" + action);

    /// <summary>/v1/tenants/T/images/I/snapshots[/S[/apply]].</summary>
    public static string SnapshotPath(string tenant, string image, string? snapshot = null, bool apply = false) =>
        ImagePath(tenant, image, "snapshots") + (snapshot is null ? "" : "/" + Escape(snapshot)) + (apply ? "/apply" : "");

    /// <summary>/v1/exports/NAME (each '/'-separated part escaped).</summary>
    public static string ExportPath(string name) => $"{Exports}/{EscapeCatchAll(name)}";

    /// <summary>/v1/limits/exports/NAME.</summary>
    public static string ExportLimitPath(string name) => $"{Limits}/exports/{EscapeCatchAll(name)}";

    /// <summary>/v1/limits/tenants/T.</summary>
    public static string TenantLimitPath(string tenant) => $"{Limits}/tenants/{Escape(tenant)}";

    private static string Escape(string segment) => Uri.EscapeDataString(segment);

    private static string EscapeCatchAll(string name) => string.Join('/', name.Split('/').Select(Escape));
}
