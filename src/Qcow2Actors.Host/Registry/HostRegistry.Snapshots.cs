using System.Globalization;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Format;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// Snapshots of an image, served or not, and the check of an open one: the engine's online operations
/// (requests pause, checkpoint, edit, resume; clients see no error). A closed image is opened for the
/// operation and closed again.
/// </summary>
internal sealed partial class HostRegistry
{
    public Task<IReadOnlyList<SnapshotReply>> ListSnapshotsAsync(string tenant, string image) => ChangeAsync(() =>
        WithOpenImageAsync(tenant, image, refuseFailed: false, async open =>
            (IReadOnlyList<SnapshotReply>)[.. (await open.ListSnapshotsAsync()).Select(ToReply)]));

    public Task<SnapshotReply> CreateSnapshotAsync(string tenant, string image, SnapshotCreateRequest request) => ChangeAsync(() =>
        WithOpenImageAsync(tenant, image, refuseFailed: true, async open =>
        {
            var created = ToReply(await open.CreateSnapshotAsync(request.Name));
            _log.LogInformation("snapshot '{Snapshot}' of image {Tenant}/{Image} created", created.Name, tenant, image);
            return created;
        }));

    public Task DeleteSnapshotAsync(string tenant, string image, string snapshot) => ChangeAsync(() =>
        WithOpenImageAsync(tenant, image, refuseFailed: true, async open =>
        {
            await RefuseIfRecordingBaseAsync(Image(tenant, image), open, snapshot);
            var deleted = await open.DeleteSnapshotAsync(snapshot);
            _log.LogInformation("snapshot '{Snapshot}' of image {Tenant}/{Image} deleted", deleted.Name, tenant, image);
            return true;
        }));

    public Task<SnapshotReply> ApplySnapshotAsync(string tenant, string image, string snapshot) => ChangeAsync(() =>
        WithOpenImageAsync(tenant, image, refuseFailed: true, async open =>
        {
            RefuseIfRecorded(Image(tenant, image), "apply a snapshot to");
            var applied = ToReply(await open.ApplySnapshotAsync(snapshot));
            _log.LogInformation("snapshot '{Snapshot}' of image {Tenant}/{Image} applied", applied.Name, tenant, image);
            return applied;
        }));

    /// <summary>The engine's read-only check of the open image, clients served meanwhile.</summary>
    private static async Task<CheckResult> CheckOpenAsync(ImageEntry entry, Qcow2Image image)
    {
        try
        {
            return await image.CheckAsync();
        }
        catch (InvalidOperationException ex)
        {
            throw HostApiException.Conflict(ErrorCodes.ImageInUse, $"image '{entry.Key}' cannot be checked while open: {OneLine(ex)}");
        }
    }

    private async Task<T> WithOpenImageAsync<T>(string tenantName, string image, bool refuseFailed, Func<Qcow2Image, Task<T>> action)
    {
        var tenant = Tenant(tenantName);
        var entry = Image(tenantName, image);
        if (refuseFailed) RefuseIfFailed(entry);
        bool wasClosed = entry.Image is null;
        if (wasClosed) await OpenEntryAsync(tenant, entry);
        try
        {
            return await action(entry.Image!);
        }
        catch (SnapshotEditException ex)
        {
            throw ex.Code switch
            {
                SnapshotEditException.NotFoundCode => HostApiException.NotFound(ErrorCodes.SnapshotNotFound, ex.Message),
                SnapshotEditException.ExistsCode => HostApiException.Conflict(ErrorCodes.SnapshotExists, ex.Message),
                SnapshotEditException.BadNameCode => HostApiException.BadRequest(ex.Message),
                _ => HostApiException.Conflict(ErrorCodes.ImageInUse, ex.Message),
            };
        }
        catch (Qcow2NoSpaceException ex)
        {
            throw HostApiException.Conflict(ErrorCodes.QuotaExceeded, $"image '{entry.Key}': {OneLine(ex)}");
        }
        catch (IOException ex) when (entry.Image is { IsReadOnly: true })
        {
            throw HostApiException.Conflict(ErrorCodes.ImageFailed, $"image '{entry.Key}' failed: {OneLine(ex)}");
        }
        finally
        {
            if (wasClosed && entry.Image is not null) await CloseEntryAsync(tenant, entry);
        }
    }

    private static SnapshotReply ToReply(SnapshotEntry s)
    {
        ulong seconds = s.VmClockNanoseconds / 1_000_000_000;
        return new SnapshotReply
        {
            Id = s.Id,
            Name = s.Name,
            VmStateSize = (long)s.VmStateSize,
            Date = DateTimeOffset.FromUnixTimeSeconds(s.DateSeconds).AddTicks(s.DateNanoseconds / 100),
            VmClock = string.Create(CultureInfo.InvariantCulture,
                $"{seconds / 3600:00}:{seconds / 60 % 60:00}:{seconds % 60:00}.{s.VmClockNanoseconds / 1_000_000 % 1000:000}"),
            Icount = s.Icount,
        };
    }
}
