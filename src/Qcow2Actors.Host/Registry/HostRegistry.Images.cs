using System.Text.Json;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Cli;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Info;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    /// <summary>Options that would point an image outside the data dir (or at another tenant's files).</summary>
    private static readonly string[] RefusedOptions = ["backing_file", "backing_fmt", "data_file", "data_file_raw", "size"];

    public Task<ImageReply> CreateImageAsync(string tenantName, ImageCreateRequest request) => ChangeAsync(async () =>
    {
        var tenant = Tenant(tenantName);
        Names.Check(request.Name, "image");
        if (request.Size <= 0) throw HostApiException.BadRequest($"size must be positive ({request.Size})");
        var path = ImagePath(tenant.Name, request.Name);
        if (tenant.Images.ContainsKey(request.Name) || File.Exists(path))
            throw HostApiException.Conflict(ErrorCodes.ImageExists, $"tenant '{tenant.Name}' already has an image named '{request.Name}'");
        if (tenant.MaxImages is { } max && tenant.Images.Count >= max)
            throw HostApiException.Conflict(ErrorCodes.ImageLimit, $"tenant '{tenant.Name}' has {tenant.Images.Count} image(s), its limit (maxImages {max})");
        if (tenant.Quota.AvailableBytes is 0)
            throw HostApiException.Conflict(ErrorCodes.QuotaExceeded, $"tenant '{tenant.Name}' uses {tenant.Quota.UsedBytes} of its {tenant.Quota.LimitBytes}-byte quota");
        var options = ParseCreateOptions(request.Options, request.Size);

        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        try
        {
            ImageCreator.Create(path, options);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or NotSupportedException)
        {
            throw HostApiException.BadRequest($"cannot create image '{request.Name}': {OneLine(ex)}");
        }
        var entry = new ImageEntry(tenant.Name, request.Name, path);
        tenant.Images[request.Name] = entry;
        try
        {
            await OpenEntryAsync(tenant, entry);
        }
        catch (HostApiException)
        {
            ReleaseClosedCharge(tenant, entry);
            tenant.Images.TryRemove(request.Name, out _);
            File.Delete(path);
            throw;
        }
        _log.LogInformation("image {Image} created ({Size} bytes{Options})", entry.Key, request.Size, request.Options is null ? "" : ", " + request.Options);
        return ToReply(entry, withInfo: false);
    });

    /// <summary>The options string as <c>q2a create -o</c> parses it; its errors become bad requests.</summary>
    private static Qcow2CreateOptions ParseCreateOptions(string? text, long size)
    {
        try
        {
            var parsed = CreateOptions.Parse("qcow2", string.IsNullOrEmpty(text) ? [] : [text], imagePath: null);
            if (parsed.HelpRequested) throw HostApiException.BadRequest("options: 'help' lists options only on the command line (q2a create -o help)");
            foreach (var key in RefusedOptions)
                if (parsed.Text(key) is not null) throw HostApiException.BadRequest($"option '{key}' is not allowed for images the host manages");
            // Host space (falloc, full) is the CLI's alone for now: refused rather than silently made metadata-only.
            if (parsed.HostPreallocation is { } mode)
                throw HostApiException.BadRequest($"option 'preallocation={mode}' is not supported for images the host manages (use off or metadata)");
            return parsed.ToQcow2Options(size, "");
        }
        catch (CliException ex)
        {
            throw HostApiException.BadRequest($"options: {ex.Message}");
        }
    }

    public IReadOnlyList<ImageReply> ListImages(string? tenant)
    {
        var tenants = tenant is null ? _tenants.Values : [Tenant(tenant)];
        return [.. tenants.SelectMany(t => t.Images.Values).OrderBy(i => i.Key, StringComparer.Ordinal).Select(i => ToReply(i, withInfo: false))];
    }

    public ImageReply GetImage(string tenant, string image) => ToReply(Image(tenant, image), withInfo: true);

    public Task<ImageReply> OpenImageAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        var tenant = Tenant(tenantName);
        var entry = Image(tenantName, image);
        if (entry.Image is null) await OpenEntryAsync(tenant, entry);
        return ToReply(entry, withInfo: false);
    });

    public Task<ImageReply> CloseImageAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        var tenant = Tenant(tenantName);
        var entry = Image(tenantName, image);
        RefuseIfExported(entry, "close");
        if (entry.Image is not null && !await CloseEntryAsync(tenant, entry))
            _log.LogWarning("image {Image} did not close clean; its journal makes the next open recover it", entry.Key);
        return ToReply(entry, withInfo: false);
    });

    public Task DeleteImageAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        var tenant = Tenant(tenantName);
        var entry = Image(tenantName, image);
        RefuseIfExported(entry, "delete");
        if (entry.Image is not null) await CloseEntryAsync(tenant, entry);
        ReleaseClosedCharge(tenant, entry);
        tenant.Images.TryRemove(image, out _);
        File.Delete(entry.Path);
        File.Delete(entry.Path + ".journal"); // left only by an unclean close
        _log.LogInformation("image {Image} deleted", entry.Key);
    });

    public Task<ImageReply> ResizeImageAsync(string tenantName, string image, ResizeRequest request) => ChangeAsync(async () =>
    {
        var tenant = Tenant(tenantName);
        var entry = Image(tenantName, image);
        RefuseIfFailed(entry);
        RefuseIfRecorded(entry, "resize");
        if (request.Size <= 0 || request.Size % 512 != 0) throw HostApiException.BadRequest($"size must be a positive multiple of 512 ({request.Size})");
        bool wasClosed = entry.Image is null;
        if (wasClosed) await OpenEntryAsync(tenant, entry);
        var opened = entry.Image!;
        try
        {
            if (request.Size < opened.VirtualSize)
                throw HostApiException.BadRequest($"shrinking is refused: {request.Size} is below the image's {opened.VirtualSize} bytes");
            await opened.ResizeAsync(request.Size);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or NotSupportedException)
        {
            throw HostApiException.BadRequest($"cannot resize image '{entry.Key}': {OneLine(ex)}");
        }
        catch (Qcow2NoSpaceException ex)
        {
            throw HostApiException.Conflict(ErrorCodes.QuotaExceeded, $"cannot resize image '{entry.Key}': {OneLine(ex)}");
        }
        catch (IOException ex) when (opened.IsReadOnly)
        {
            throw HostApiException.Conflict(ErrorCodes.ImageFailed, $"image '{entry.Key}' failed: {OneLine(ex)}");
        }
        finally
        {
            if (wasClosed) await CloseEntryAsync(tenant, entry);
        }
        _log.LogInformation("image {Image} resized to {Size} bytes", entry.Key, request.Size);
        return ToReply(entry, withInfo: false);
    });

    public Task<CheckReply> CheckImageAsync(string tenantName, string image) => ChangeAsync(async () =>
    {
        var entry = Image(tenantName, image);
        CheckResult result;
        if (entry.Image is { } open)
            result = await CheckOpenAsync(entry, open);
        else
            result = await Task.Run(() => ImageChecker.CheckFile(entry.Path));
        return new CheckReply
        {
            Errors = result.CheckErrors,
            Leaks = result.Leaks,
            Corruptions = result.Corruptions,
            AllocatedClusters = result.AllocatedClusters,
            TotalClusters = result.TotalClusters,
            Messages = result.AbortReason is { } reason ? [.. result.Messages, $"Check failed: {reason}"] : result.Messages,
        };
    });

    private void RefuseIfExported(ImageEntry entry, string what)
    {
        if (entry.Exports.Count > 0)
            throw HostApiException.Conflict(ErrorCodes.ImageExported,
                $"cannot {what} image '{entry.Key}': it is exported as {string.Join(", ", entry.Exports.Select(e => $"'{e}'"))}; remove the export first");
    }

    private static void RefuseIfFailed(ImageEntry entry)
    {
        if (entry.Failure is { } failure)
            throw HostApiException.Conflict(ErrorCodes.ImageFailed, $"image '{entry.Key}' has failed: {failure}");
    }

    /// <summary>Opens the image read-write, charging the tenant's quota; a failure marks it failed and is an image-failed refusal.</summary>
    private async Task OpenEntryAsync(TenantEntry tenant, ImageEntry entry)
    {
        ReleaseClosedCharge(tenant, entry);
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            Cache = Settings.Cache,
            Quota = tenant.Quota,
            OnFault = fault => OnFault(entry, fault),
            MetricsName = entry.Key,
            MetricTags = [new("tenant", entry.Tenant)],
        };
        try
        {
            entry.ClosedUnclean = false;
            entry.Image = await images.OpenAsync(entry.Path, options);
            entry.Failure = null;
            _log.LogInformation("image {Image} opened", entry.Key);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            entry.Failure = OneLine(ex);
            ChargeClosed(tenant, entry);
            _log.LogError("image {Image} failed to open: {Reason}", entry.Key, entry.Failure);
            throw HostApiException.Conflict(ErrorCodes.ImageFailed, $"image '{entry.Key}' failed to open: {entry.Failure}");
        }
    }

    /// <summary>At start: an image that will not open is marked failed and the host goes on.</summary>
    private async Task TryOpenAsync(TenantEntry tenant, ImageEntry entry)
    {
        try
        {
            await OpenEntryAsync(tenant, entry);
        }
        catch (HostApiException) { }
    }

    /// <summary>Flushes (unless read-only after a fault), checkpoints and closes; true when it ended clean.</summary>
    private async Task<bool> CloseEntryAsync(TenantEntry tenant, ImageEntry entry)
    {
        var image = entry.Image!;
        bool clean = true;
        try
        {
            if (!image.IsReadOnly) await image.FlushAsync();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _log.LogError("image {Image}: flush before close failed: {Reason}", entry.Key, OneLine(ex));
            clean = false;
        }
        try
        {
            await image.DisposeAsync();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _log.LogError("image {Image}: close failed: {Reason}", entry.Key, OneLine(ex));
            clean = false;
        }
        entry.Image = null;
        ChargeClosed(tenant, entry);
        clean &= !entry.ClosedUnclean;
        _log.LogInformation("image {Image} closed{Clean}", entry.Key, clean ? " clean" : " NOT clean");
        return clean;
    }

    private void OnFault(ImageEntry entry, Qcow2ImageFault fault)
    {
        switch (fault.Kind)
        {
            case Qcow2ImageFaultKind.ReadOnly or Qcow2ImageFaultKind.Corrupt:
                entry.Failure = fault.Reason;
                _log.LogError("image {Image} failed ({Kind}): {Reason}", entry.Key, fault.Kind, fault.Reason);
                break;
            case Qcow2ImageFaultKind.UncleanClose:
                entry.ClosedUnclean = true;
                _log.LogError("image {Image} closed unclean: {Reason}", entry.Key, fault.Reason);
                break;
            default:
                _log.LogWarning("image {Image}: {Kind}: {Reason}", entry.Key, fault.Kind, fault.Reason);
                break;
        }
    }

    /// <summary>A closed image's file still takes space: its size counts against the tenant's quota.</summary>
    private static void ChargeClosed(TenantEntry tenant, ImageEntry entry)
    {
        if (entry.ClosedCharge != 0) return;
        // What the file holds on the host (qemu-img's disk size: freed clusters are punched, holes cost
        // nothing), close to what the open image charges (its allocated clusters); the length counted holes.
        long size;
        try
        {
            size = File.Exists(entry.Path) ? ImageInfo.ReadChain(entry.Path, backingChain: false, forceShare: true)[0].ActualSize : 0;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            size = File.Exists(entry.Path) ? new FileInfo(entry.Path).Length : 0; // unreadable (corrupt): the file's length
        }
        tenant.Quota.Charge(size);
        entry.ClosedCharge = size;
    }

    private static void ReleaseClosedCharge(TenantEntry tenant, ImageEntry entry)
    {
        tenant.Quota.Release(entry.ClosedCharge);
        entry.ClosedCharge = 0;
    }

    private ImageReply ToReply(ImageEntry entry, bool withInfo)
    {
        var open = entry.Image;
        ImageInfo? info = null;
        try
        {
            if (File.Exists(entry.Path)) info = ImageInfo.ReadChain(entry.Path, backingChain: false, forceShare: true)[0];
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            _log.LogDebug(ex, "image {Image}: info unreadable", entry.Key);
        }
        return new ImageReply
        {
            Tenant = entry.Tenant,
            Name = entry.Name,
            Path = entry.Path,
            VirtualSize = open?.VirtualSize ?? info?.VirtualSize ?? 0,
            AllocatedBytes = info?.ActualSize ?? 0,
            State = entry.Failure is not null ? ImageState.Failed : open is not null ? ImageState.Open : ImageState.Closed,
            Reason = entry.Failure,
            Exports = [.. entry.Exports],
            Info = withInfo && info is not null ? ToJson(info) : null,
        };
    }

    private static JsonElement ToJson(ImageInfo info)
    {
        using var document = JsonDocument.Parse(info.ToQemuJson().ToJson());
        return document.RootElement.Clone();
    }

    private static string OneLine(Exception ex) => ex.Message.ReplaceLineEndings(" ");
}
