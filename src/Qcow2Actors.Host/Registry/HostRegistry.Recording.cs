using Microsoft.Extensions.Logging;
using Qcow2Actors.CrashLab;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// Exports that record their guest's changes for the crash lab (<see cref="RecordingExport"/>). A recording must
/// see every change to its image, so while one runs the image gets no other writable export, no resize, no
/// snapshot apply, and its base snapshot cannot be deleted.
/// </summary>
internal sealed partial class HostRegistry
{
    private static readonly string[] ReservedLogEndings = [".qcow2", ".journal"];

    /// <summary>
    /// Where export <paramref name="record"/> of <paramref name="entry"/> may write its log: a file name in the
    /// tenant's directory (the rule image names follow, so nothing leaves it), or, for an operator, any absolute
    /// path. Refuses a read-only export, an image another writable export serves, and an existing file.
    /// </summary>
    private string RecordPath(ImageEntry entry, bool readOnly, string record)
    {
        if (readOnly) throw HostApiException.BadRequest("record: a read-only export has nothing to record");
        string path;
        if (Path.IsPathRooted(record) && ActingToken.Value is null)
        {
            path = Path.GetFullPath(record);
        }
        else
        {
            if (Path.IsPathRooted(record) || record.Contains('/'))
                throw HostApiException.BadRequest($"record: '{Printable(record)}' is a path; a tenant's log is a file name in its own directory (A-Z a-z 0-9 . _ -)");
            Names.Check(record, "record log");
            if (ReservedLogEndings.FirstOrDefault(e => record.EndsWith(e, StringComparison.Ordinal)) is { } ending)
                throw HostApiException.BadRequest($"record: a log name may not end in '{ending}' (image files do)");
            path = Path.Combine(Settings.DataDir, entry.Tenant, record);
        }
        if (entry.Exports.Select(n => _exports.GetValueOrDefault(n)).FirstOrDefault(e => e is { ReadOnly: false }) is { } writer)
            throw HostApiException.Conflict(ErrorCodes.ImageExported,
                $"cannot record image '{entry.Key}': the writable export '{writer.Name}' serves it and its writes would be missing from the log; remove it first");
        if (File.Exists(path) || Directory.Exists(path))
            throw HostApiException.Conflict(ErrorCodes.RecordExists, $"recording log '{path}' exists: a recording is never overwritten, choose a new name");
        return path;
    }

    /// <summary>Takes the base snapshot and creates the log; the engine's and the file system's refusals become API errors.</summary>
    private async Task<RecordingExport> StartRecordingAsync(ImageEntry entry, Qcow2Export export, string path)
    {
        try
        {
            return await RecordingExport.StartAsync(export, path, ownsInner: false, time);
        }
        catch (SnapshotEditException ex)
        {
            throw ex.Code == SnapshotEditException.ExistsCode
                ? HostApiException.Conflict(ErrorCodes.SnapshotExists, $"cannot record image '{entry.Key}': {OneLine(ex)}")
                : HostApiException.Conflict(ErrorCodes.ImageInUse, $"cannot record image '{entry.Key}': {OneLine(ex)}");
        }
        catch (IOException ex) when (File.Exists(path) && ex.Message.Contains(path, StringComparison.Ordinal))
        {
            // Created by someone else between the check and the create: still never overwritten.
            throw HostApiException.Conflict(ErrorCodes.RecordExists, OneLine(ex));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw HostApiException.BadRequest($"cannot record image '{entry.Key}' into '{path}': {OneLine(ex)}");
        }
    }

    /// <summary>Closes the export's log, complete, once no request of its clients is in flight; a failure is logged.</summary>
    private async Task EndRecordingAsync(ExportEntry export)
    {
        if (export.Recording is not { } recording) return;
        try
        {
            await recording.DisposeAsync();
            _log.LogInformation("export {Export}: recording into {Log} closed", export.Name, recording.LogPath);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _log.LogError("export {Export}: closing the recording {Log} failed: {Reason}", export.Name, recording.LogPath, OneLine(ex));
        }
    }

    /// <summary>The export recording <paramref name="entry"/>, if one is.</summary>
    private ExportEntry? RecordedBy(ImageEntry entry) =>
        entry.Exports.Select(n => _exports.GetValueOrDefault(n)).FirstOrDefault(e => e?.Recording is not null);

    /// <summary>409 image-in-use while an export records the image: <paramref name="what"/> would change it behind the log.</summary>
    private void RefuseIfRecorded(ImageEntry entry, string what)
    {
        if (RecordedBy(entry) is { } recorder)
            throw HostApiException.Conflict(ErrorCodes.ImageInUse,
                $"cannot {what} image '{entry.Key}': export '{recorder.Name}' is recording it into '{recorder.Recording!.LogPath}'; remove that export first");
    }

    /// <summary>409 image-in-use for deleting the snapshot a running recording starts from (an ID first, then a name, as the engine finds it).</summary>
    private async Task RefuseIfRecordingBaseAsync(ImageEntry entry, Qcow2Image image, string idOrName)
    {
        if (RecordedBy(entry) is not { Recording: { } recording } recorder) return;
        var snapshots = await image.ListSnapshotsAsync();
        var target = snapshots.FirstOrDefault(s => s.Id == idOrName) ?? snapshots.FirstOrDefault(s => s.Name == idOrName);
        if (target is not null && target.Name == recording.BaseSnapshot)
            throw HostApiException.Conflict(ErrorCodes.ImageInUse,
                $"cannot delete snapshot '{target.Name}' of image '{entry.Key}': export '{recorder.Name}' records from it; remove that export first");
    }

    private static string Printable(string text) => new([.. text.Take(80).Select(c => char.IsControl(c) ? '?' : c)]);
}
