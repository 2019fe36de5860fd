using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    public Task<TenantReply> CreateTenantAsync(TenantCreateRequest request) => ChangeAsync(() =>
    {
        Names.Check(request.Name, "tenant");
        CheckQuota(request.Quota, request.MaxImages);
        var entry = new TenantEntry(request.Name, request.Quota is null or 0 ? null : request.Quota, request.MaxImages is null or 0 ? null : request.MaxImages);
        if (!_tenants.TryAdd(request.Name, entry))
            throw HostApiException.Conflict(ErrorCodes.TenantExists, $"tenant '{request.Name}' exists");
        Directory.CreateDirectory(Path.Combine(Settings.DataDir, request.Name));
        _log.LogInformation("tenant {Tenant} added (quota {Quota}, max images {MaxImages})", entry.Name, entry.Quota.LimitBytes, entry.MaxImages);
        return Task.FromResult(ToReply(entry));
    });

    /// <summary>Every tenant, or only <paramref name="only"/> (a tenant token's view).</summary>
    public IReadOnlyList<TenantReply> ListTenants(string? only = null) =>
        [.. _tenants.Values.Where(t => only is null || t.Name == only).OrderBy(t => t.Name, StringComparer.Ordinal).Select(ToReply)];

    public TenantReply GetTenant(string name) => ToReply(Tenant(name));

    public Task<TenantReply> UpdateTenantAsync(string name, TenantUpdateRequest request) => ChangeAsync(() =>
    {
        var entry = Tenant(name);
        CheckQuota(request.Quota, request.MaxImages);
        if (request.Quota is { } quota) entry.Quota.LimitBytes = quota == 0 ? null : quota;
        if (request.MaxImages is { } max) entry.MaxImages = max == 0 ? null : max;
        _log.LogInformation("tenant {Tenant} changed (quota {Quota}, max images {MaxImages})", entry.Name, entry.Quota.LimitBytes, entry.MaxImages);
        return Task.FromResult(ToReply(entry));
    });

    public Task DeleteTenantAsync(string name) => ChangeAsync(() =>
    {
        var entry = Tenant(name);
        if (!entry.Images.IsEmpty)
            throw HostApiException.Conflict(ErrorCodes.TenantNotEmpty, $"tenant '{name}' still has {entry.Images.Count} image(s); delete them first");
        _tenants.TryRemove(name, out _);
        ForgetTokens(name);
        entry.Group?.Dispose(); // no export uses it: the tenant has no images
        try
        {
            Directory.Delete(Path.Combine(Settings.DataDir, name)); // only when empty: stray files stay for the operator
        }
        catch (IOException) { }
        ApplyLimits();
        _log.LogInformation("tenant {Tenant} removed", name);
        return Task.CompletedTask;
    });

    private static void CheckQuota(long? quota, int? maxImages)
    {
        if (quota is < 0) throw HostApiException.BadRequest($"quota must not be negative ({quota})");
        if (maxImages is < 0) throw HostApiException.BadRequest($"maxImages must not be negative ({maxImages})");
    }

    private static TenantReply ToReply(TenantEntry t) => new()
    {
        Name = t.Name,
        Quota = t.Quota.LimitBytes,
        MaxImages = t.MaxImages,
        UsedBytes = t.Quota.UsedBytes,
        Images = t.Images.Count,
        Revoked = t.Revoked,
    };
}
