using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// Limits: one throttle group per tenant limit (shared by all its exports) and one per export limit;
/// an export is held back by both. Wired to the throttle slice's ThrottleGroup/ThrottledExport.
/// </summary>
internal sealed partial class HostRegistry
{
    public Task<LimitReply> SetExportLimitAsync(string name, LimitRequest request) => ChangeAsync(() =>
    {
        var values = LimitValues.From(request);
        if (!_exports.TryGetValue(name, out var export))
            throw HostApiException.NotFound(ErrorCodes.ExportNotFound, $"no export named '{name}'");
        RequireThrottle();
        export.Limit = values;
        ApplyLimits();
        _log.LogInformation("limit of export {Export} set: {Limit}", name, values);
        return Task.FromResult(values.ToReply(LimitScope.Export, name));
    });

    public Task<LimitReply> SetTenantLimitAsync(string tenantName, LimitRequest request) => ChangeAsync(() =>
    {
        var values = LimitValues.From(request);
        var tenant = Tenant(tenantName);
        RequireThrottle();
        tenant.Limit = values;
        ApplyLimits();
        _log.LogInformation("limit of tenant {Tenant} set: {Limit}", tenantName, values);
        return Task.FromResult(values.ToReply(LimitScope.Tenant, tenantName));
    });

    public IReadOnlyList<LimitReply> ListLimits() =>
    [
        .. _tenants.Values.Where(t => t.Limit is not null).OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => t.Limit!.ToReply(LimitScope.Tenant, t.Name)),
        .. _exports.Values.Where(e => e.Limit is not null).OrderBy(e => e.Name, StringComparer.Ordinal).Select(e => e.Limit!.ToReply(LimitScope.Export, e.Name)),
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

    // Until the throttle slice lands: limits are refused (501) and exports are served unwrapped.
    private static void RequireThrottle() => throw HostApiException.NotImplemented("throttling (limits)");

    private static INbdExport Throttle(INbdExport export) => export;

    private static void ForgetThrottle(ExportEntry export) { }

    private void ApplyLimits() { }
}
