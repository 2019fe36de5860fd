using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    public Task<ExportReply> AddExportAsync(ExportAddRequest request) => ChangeAsync(async () =>
    {
        var tenant = Tenant(request.Tenant);
        var entry = Image(request.Tenant, request.Image);
        var name = string.IsNullOrEmpty(request.Name) ? $"{request.Tenant}/{request.Image}" : request.Name;
        Names.CheckExport(name);
        if (_exports.TryGetValue(name, out var existing))
        {
            // A tenant is not told that another tenant's export has this name (an operator may have given it one
            // under TENANT/): the refusal is the 403 a name outside its prefix gets, not export-exists.
            if (ActingToken.Value is { } acting && existing.Image.Tenant != acting.Tenant)
                throw new HostApiException(403, ErrorCodes.Forbidden, $"the export name '{name}' is not available to tenant '{acting.Tenant}'");
            throw HostApiException.Conflict(ErrorCodes.ExportExists, $"an export named '{name}' exists");
        }
        RefuseIfFailed(entry);
        bool readOnly = request.ReadOnly ?? false;
        // Checked before the image opens: a refused recording leaves nothing changed.
        var record = string.IsNullOrEmpty(request.Record) ? null : RecordPath(entry, readOnly, request.Record);
        if (!readOnly) RefuseIfRecorded(entry, $"add the writable export '{name}' to");
        if (entry.Image is null) await OpenEntryAsync(tenant, entry);
        return ToReply(await AddExportCoreAsync(entry, name, readOnly, request.Bitmaps ?? [], request.AllocationDepth ?? false, record));
    });

    /// <summary>
    /// Serves an open image under <paramref name="name"/> (the throttle wraps it when one applies), recording into
    /// <paramref name="record"/> (a checked full path) when given. With <paramref name="listen"/> false the NBD
    /// server is not given it (cluster mode: the node's cluster export calls it).
    /// </summary>
    /// <exception cref="HostApiException">400 bad-request: a bitmap the image does not have, or cannot export (qemu-nbd's message).</exception>
    private async Task<ExportEntry> AddExportCoreAsync(ImageEntry entry, string name, bool readOnly, IReadOnlyList<string> bitmaps, bool allocationDepth,
        string? record = null, bool listen = true)
    {
        if (bitmaps.FirstOrDefault(string.IsNullOrEmpty) is not null)
            throw HostApiException.BadRequest("bitmaps: a bitmap name must not be empty");
#pragma warning disable CA2000 // kept by the export entry and disposed when the export is removed or the host stops
        Qcow2Export export;
        try
        {
            export = new Qcow2Export(entry.Image!, name, readOnly, ownsImage: false, discard: Settings.Discard)
            {
                MetricTags = [new("tenant", entry.Tenant)],
                Tenant = entry.Tenant,
                AllocationDepth = allocationDepth,
                DirtyBitmaps = bitmaps,
            };
        }
        catch (ArgumentException ex)
        {
            throw HostApiException.BadRequest($"image {entry.Key}: {ex.Message}");
        }
        // Before the NBD server knows the export: the base snapshot comes before any guest request.
        var recording = record is null ? null : await StartRecordingAsync(entry, export, record);
        var served = Throttle((INbdExport?)recording ?? export);
        var exportEntry = new ExportEntry(name, entry, readOnly, export, served, recording);
#pragma warning restore CA2000
        // A revoked tenant's exports are kept but served to nobody until it is restored.
        if (listen && _tenants.GetValueOrDefault(entry.Tenant) is not { Revoked: true }) _nbd!.AddExport(served);
        _exports[name] = exportEntry;
        entry.Exports = [.. entry.Exports, name];
        ApplyLimits();
        if (recording is not null)
            _log.LogInformation("export {Export} added for image {Image}, recording into {Log} from snapshot {Snapshot}", name, entry.Key, recording.LogPath, recording.BaseSnapshot);
        else _log.LogInformation("export {Export} added for image {Image}{ReadOnly}", name, entry.Key, readOnly ? " (read-only)" : "");
        return exportEntry;
    }

    /// <summary>Every export, or only <paramref name="tenant"/>'s (a tenant token's view).</summary>
    public IReadOnlyList<ExportReply> ListExports(string? tenant = null) =>
        [.. _exports.Values.Where(e => tenant is null || e.Image.Tenant == tenant).OrderBy(e => e.Name, StringComparer.Ordinal).Select(ToReply)];

    /// <summary>The tenant of export <paramref name="name"/>; null when there is no such export.</summary>
    public string? ExportTenant(string name) => _exports.GetValueOrDefault(name)?.Image.Tenant;

    /// <summary>Stops serving the export: its clients' requests in flight reply, then they are disconnected; the image is flushed and stays open.</summary>
    public Task RemoveExportAsync(string name) => ChangeAsync(async () =>
    {
        if (!_exports.TryGetValue(name, out var export))
            throw HostApiException.NotFound(ErrorCodes.ExportNotFound, $"no export named '{name}'");
        int clients = _nbd!.GetConnectionCount(name);
        // Requests waiting in a throttle group go on at once, so a low limit cannot hold the removal
        // (and with it every control change); clients still busy after stop-timeout are cut off.
        export.Served.SetGroups();
        using (var deadline = new CancellationTokenSource(Settings.StopTimeout))
            await _nbd.RemoveExportAsync(name, deadline.Token);
        _exports.TryRemove(name, out _);
        export.Image.Exports = [.. export.Image.Exports.Where(e => e != name)];
        ForgetThrottle(export);
        await EndRecordingAsync(export); // no request is in flight any more: the log closes complete
        await export.Export.DisposeAsync(); // the image is not the export's: it stays open
        if (export.Image.Image is { IsReadOnly: false } image)
        {
            try
            {
                await image.FlushAsync();
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                _log.LogError("image {Image}: flush after removing export {Export} failed: {Reason}", export.Image.Key, name, OneLine(ex));
            }
        }
        _log.LogInformation("export {Export} removed; {Clients} client(s) disconnected", name, clients);
    });

    private ExportReply ToReply(ExportEntry e) => new()
    {
        Name = e.Name,
        Tenant = e.Image.Tenant,
        Image = e.Image.Name,
        ReadOnly = e.ReadOnly,
        Bitmaps = e.Export.DirtyBitmaps,
        AllocationDepth = e.Export.AllocationDepth,
        Record = e.Recording?.LogPath,
        RecordSnapshot = e.Recording?.BaseSnapshot,
        Uri = UriOf(e.Name),
        Connections = _nbd?.GetConnectionCount(e.Name) ?? 0,
        State = e.Image.Failure is null ? ExportState.Ok : ExportState.Failed,
        Reason = e.Image.Failure,
    };
}
