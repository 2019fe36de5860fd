using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Throttling;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// Limits: one <see cref="ThrottleGroup"/> per tenant limit (shared by all its exports) and one per export
/// limit; an export is held back by both. Every export is served through a <see cref="ThrottledExport"/>, so
/// a change of limits (API, SIGHUP) takes effect on connected clients without a reconnect.
/// </summary>
internal sealed partial class HostRegistry
{
    public Task<LimitReply> SetExportLimitAsync(string name, LimitRequest request) => ChangeAsync(() =>
    {
        var values = LimitValues.From(request);
        if (!_exports.TryGetValue(name, out var export))
            throw HostApiException.NotFound(ErrorCodes.ExportNotFound, $"no export named '{name}'");
        export.Limit = values;
        ApplyLimits();
        _log.LogInformation("limit of export {Export} set: {Limit}", name, values);
        return Task.FromResult(values.ToReply(LimitScope.Export, name));
    });

    public Task<LimitReply> SetTenantLimitAsync(string tenantName, LimitRequest request) => ChangeAsync(() =>
    {
        var values = LimitValues.From(request);
        var tenant = Tenant(tenantName);
        tenant.Limit = values;
        ApplyLimits();
        _log.LogInformation("limit of tenant {Tenant} set: {Limit}", tenantName, values);
        return Task.FromResult(values.ToReply(LimitScope.Tenant, tenantName));
    });

    /// <summary>Every limit, or only those on <paramref name="tenant"/> and its exports (a tenant token's view).</summary>
    public IReadOnlyList<LimitReply> ListLimits(string? tenant = null) =>
    [
        .. _tenants.Values.Where(t => t.Limit is not null && (tenant is null || t.Name == tenant)).OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => t.Limit!.ToReply(LimitScope.Tenant, t.Name)),
        .. _exports.Values.Where(e => e.Limit is not null && (tenant is null || e.Image.Tenant == tenant)).OrderBy(e => e.Name, StringComparer.Ordinal).Select(e => e.Limit!.ToReply(LimitScope.Export, e.Name)),
    ];

    public Task ClearExportLimitAsync(string name) => ChangeAsync(() =>
    {
        if (!_exports.TryGetValue(name, out var export))
            throw HostApiException.NotFound(ErrorCodes.ExportNotFound, $"no export named '{name}'");
        export.Limit = null;
        ApplyLimits();
        _log.LogInformation("limit of export {Export} cleared", name);
        return Task.CompletedTask;
    });

    public Task ClearTenantLimitAsync(string tenantName) => ChangeAsync(() =>
    {
        Tenant(tenantName).Limit = null;
        ApplyLimits();
        _log.LogInformation("limit of tenant {Tenant} cleared", tenantName);
        return Task.CompletedTask;
    });

    /// <summary>Every export is served throttled (with no group until a limit applies).</summary>
    private static ThrottledExport Throttle(INbdExport export) => new(export);

    /// <summary>After an export was removed: its own group and its throttle wrapper go.</summary>
    private static void ForgetThrottle(ExportEntry export)
    {
        export.Group?.Dispose();
        export.Group = null;
        export.Served.Dispose();
    }

    /// <summary>
    /// Brings the groups in line with the limits: creates, updates (in place, for queued and new requests)
    /// or drops each tenant's and export's group, then gives every export its tenant's group and its own.
    /// </summary>
    private void ApplyLimits()
    {
        foreach (var tenant in _tenants.Values)
            tenant.Group = Sync(tenant.Group, tenant.Limit, $"tenant:{tenant.Name}");
        foreach (var export in _exports.Values)
        {
            export.Group = Sync(export.Group, export.Limit, $"export:{export.Name}");
            var tenantGroup = _tenants.GetValueOrDefault(export.Image.Tenant)?.Group;
            ThrottleGroup[] groups = [.. new[] { tenantGroup, export.Group }.OfType<ThrottleGroup>()];
            export.Served.SetGroups(groups);
        }
        // A tenant removed while its group was in use by nobody: nothing holds it any more.
    }

    private static ThrottleGroup? Sync(ThrottleGroup? group, LimitValues? limit, string name)
    {
        if (limit is null || limit.ToThrottle().IsUnlimited)
        {
            group?.Dispose();
            return null;
        }
        if (group is null) return new ThrottleGroup(name, limit.ToThrottle());
        // Update empties the buckets: only a changed limit may do that, not every control change.
        var limits = limit.ToThrottle();
        if (group.Limits != limits) group.Update(limits);
        return group;
    }

    /// <summary>At stop, after the NBD server: the groups' timers go.</summary>
    private void DisposeThrottles()
    {
        foreach (var export in _exports.Values) ForgetThrottle(export);
        foreach (var tenant in _tenants.Values)
        {
            tenant.Group?.Dispose();
            tenant.Group = null;
        }
    }
}
