using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Registry;

internal sealed partial class HostRegistry
{
    /// <summary>True once <see cref="StopAsync"/> closed every image clean.</summary>
    public bool StoppedClean { get; private set; }

    /// <summary>
    /// Loads host-state.json, lays the config file's tenants over it, starts the NBD server, reopens the
    /// images that were open and re-adds the exports. An image that cannot be opened is marked failed; the
    /// host starts anyway.
    /// </summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            Directory.CreateDirectory(Settings.DataDir);
            Directory.CreateDirectory(Settings.StateDir);
            var state = _store.Load();
            foreach (var t in state.Tenants) _tenants[t.Name] = new TenantEntry(t.Name, t.Quota, t.MaxImages) { Revoked = t.Revoked };
            LoadTokens(state.Tokens);
            ApplyConfig(Settings.Tenants);

            _nbd = new NbdServer(Settings.NbdOptions(loggers) with
            {
                // With TLS, a client is the tenant its certificate names and sees only that tenant's exports.
                TenantOf = Settings.NbdTlsMode != NbdTlsMode.Off ? ResolveTenant : null,
            });
            await _nbd.StartAsync(cancellationToken);

            foreach (var i in state.Images)
            {
                if (!_tenants.TryGetValue(i.Tenant, out var tenant))
                {
                    _log.LogWarning("host state names image '{Image}' of unknown tenant '{Tenant}'; skipped", i.Name, i.Tenant);
                    continue;
                }
                var entry = new ImageEntry(i.Tenant, i.Name, ImagePath(i.Tenant, i.Name)) { WantOpen = i.Open };
                tenant.Images[i.Name] = entry;
                if (!File.Exists(entry.Path))
                {
                    entry.Failure = $"image file '{entry.Path}' is missing";
                    _log.LogError("image {Image} failed: {Reason}", entry.Key, entry.Failure);
                }
                else if (i.Open) await TryOpenAsync(tenant, entry);
                else ChargeClosed(tenant, entry);
            }
            foreach (var e in state.Exports)
            {
                if (_tenants.GetValueOrDefault(e.Tenant)?.Images.GetValueOrDefault(e.Image) is not { } entry || entry.Image is null)
                {
                    _log.LogWarning("export '{Export}' not re-added: image {Tenant}/{Image} is missing or did not open (kept for the next start)", e.Name, e.Tenant, e.Image);
                    _pendingExports.Add(e);
                    continue;
                }
                // A recording ended with the last stop (its log is complete): the export comes back unrecorded.
                if (e.Record is not null)
                    _log.LogWarning("export '{Export}' re-added without recording: its recording into {Log} ended when the host stopped", e.Name, e.Record);
                try
                {
                    await AddExportCoreAsync(entry, e.Name, e.ReadOnly, e.Bitmaps ?? [], e.AllocationDepth);
                }
                catch (HostApiException ex)
                {
                    // A bitmap removed meanwhile: the export waits, kept, as for a missing image.
                    _log.LogWarning("export '{Export}' not re-added: {Reason} (kept for the next start)", e.Name, ex.Message);
                    _pendingExports.Add(e);
                }
            }
            foreach (var l in state.Limits)
            {
                if (l.Scope == "tenant" && _tenants.TryGetValue(l.Target, out var tenant) && tenant.Limit is null) tenant.Limit = l.Values;
                else if (l.Scope == "export" && _exports.TryGetValue(l.Target, out var export)) export.Limit = l.Values;
                else if (l.Scope == "export") _pendingLimits.Add(l);
            }
            ApplyLimits();
            await SaveAsync();
            _started.TrySetResult();
            _log.LogInformation("q2a host started: {Tenants} tenant(s), {Images} image(s) ({Open} open), {Exports} export(s); NBD on {EndPoint}; data in {DataDir}",
                _tenants.Count, _tenants.Values.Sum(t => t.Images.Count), OpenImageCount, _exports.Count, _nbd.LocalEndPoint, Settings.DataDir);
        }
        catch (Exception ex)
        {
            _started.TrySetException(ex);
            throw;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Stops the NBD server (requests in flight reply, up to the stop timeout), then checkpoints and closes
    /// every open image. <see cref="StoppedClean"/> says whether all of them closed clean.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(CancellationToken.None);
        try
        {
            if (_stopped) return;
            _stopped = true;
            _log.LogInformation("q2a host stopping: closing {Open} open image(s)", OpenImageCount);
            if (_nbd is not null)
            {
                await _nbd.StopAsync(Settings.StopTimeout, CancellationToken.None);
                await _nbd.DisposeAsync();
            }
            // Cluster images: forwarded requests stop reaching the images (told to ask again) before anything closes.
            await DetachClusterExportsAsync();
            DisposeThrottles();
            foreach (var export in _exports.Values) await EndRecordingAsync(export);
            bool clean = true;
            foreach (var tenant in _tenants.Values)
                foreach (var entry in tenant.Images.Values)
                    if (entry.ClusterOwned) clean &= await CloseClusterEntryAsync(tenant, entry);
                    else if (entry.Image is not null && !await CloseEntryAsync(tenant, entry)) clean = false;
            StoppedClean = clean;
            if (clean) _log.LogInformation("q2a host stopped: every image closed clean");
            else _log.LogError("q2a host stopped: some images did not close clean (their journals make the next open recover them)");
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>SIGHUP: the config file's tenants (quota, max-images, limits) again, without a restart.</summary>
    public Task ReloadAsync(IReadOnlyList<TenantConfig> tenants) => ChangeAsync(() =>
    {
        ApplyConfig(tenants);
        ApplyLimits();
        _log.LogInformation("configuration reloaded: {Count} tenant(s) in the config file", tenants.Count);
        return Task.CompletedTask;
    });

    /// <summary>Creates the tenants the config names and sets what it states for them.</summary>
    private void ApplyConfig(IReadOnlyList<TenantConfig> tenants)
    {
        SetIdentities(tenants);
        foreach (var t in tenants)
        {
            var entry = _tenants.GetOrAdd(t.Name, name => new TenantEntry(name, null, null));
            if (t.Quota is { } quota) entry.Quota.LimitBytes = quota == 0 ? null : quota;
            if (t.MaxImages is { } max) entry.MaxImages = max == 0 ? null : max;
            if (t.Limits is not null) entry.Limit = t.Limits;
        }
        // The API hides tenants from each other; NBD without TLS cannot tell who connects, so say so once.
        if (Settings.NbdTlsMode == NbdTlsMode.Off && (tenants.Any(t => t.Identities.Count > 0) || !_tokens.IsEmpty))
            _log.LogWarning("tenants are not isolated over NBD: qcow2actors.host.nbd.tls.mode is off; every NBD client can list and open every tenant's exports (set it to required and give each tenant its identities)");
    }

    public int OpenImageCount => _tenants.Values.Sum(t => t.Images.Values.Count(i => i.Image is not null));
}
