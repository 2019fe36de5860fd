using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Registry;

/// <summary>Snapshots and the check of an open image: the online-snap slice's Qcow2Image methods.</summary>
internal sealed partial class HostRegistry
{
    public Task<IReadOnlyList<SnapshotReply>> ListSnapshotsAsync(string tenant, string image) =>
        throw HostApiException.NotImplemented("snapshots of images the host manages");

    public Task<SnapshotReply> CreateSnapshotAsync(string tenant, string image, SnapshotCreateRequest request) =>
        throw HostApiException.NotImplemented("snapshots of images the host manages");

    public Task DeleteSnapshotAsync(string tenant, string image, string snapshot) =>
        throw HostApiException.NotImplemented("snapshots of images the host manages");

    public Task<SnapshotReply> ApplySnapshotAsync(string tenant, string image, string snapshot) =>
        throw HostApiException.NotImplemented("snapshots of images the host manages");

    private static Task<CheckResult> CheckOpenAsync(ImageEntry entry, Qcow2Image image) =>
        throw HostApiException.Conflict(ErrorCodes.ImageInUse, $"image '{entry.Key}' is open; close it to check it (this build cannot check an open image)");
}
