using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Engine;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// The one owner of the host's state: tenants, their images, the NBD exports and the limits.
/// </summary>
/// <remarks>
/// Owner model: a lock-guarded registry, not an actor. Every change awaits the engine or the NBD server
/// (open, create, close, remove an export and wait for its clients) and must see and change tenants, images
/// and exports together (deleting an image checks its exports; adding an export opens its image), so the
/// changes run one at a time under one asynchronous gate (<see cref="_gate"/>), each ending with the state
/// saved. Readers (lists, health, metrics) do not take the gate: the collections are concurrent and the entry
/// fields they read are volatile, so a slow open never holds up a health probe. The NBD data path never
/// touches the registry at all.
/// </remarks>
internal sealed partial class HostRegistry(HostSettings settings, ImageHost images, ILoggerFactory loggers, TimeProvider time) : IAsyncDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly ConcurrentDictionary<string, TenantEntry> _tenants = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, ExportEntry> _exports = new(StringComparer.Ordinal);
    private readonly StateStore _store = new(settings.StateDir);
    // Exports and export limits of the saved state whose image did not open at start: kept in the state
    // (a file briefly missing must not lose them for good) until their image or tenant is deleted.
    private readonly List<PersistedExport> _pendingExports = [];
    private readonly List<PersistedLimit> _pendingLimits = [];
    private readonly ILogger _log = loggers.CreateLogger("Qcow2Actors.Host");
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private NbdServer? _nbd;
    private bool _stopped;

    public HostSettings Settings { get; } = settings;

    /// <summary>The NBD server; null before start.</summary>
    public NbdServer? Nbd => _nbd;

    public IEnumerable<TenantEntry> Tenants => _tenants.Values;

    public IEnumerable<ExportEntry> Exports => _exports.Values;

    /// <summary>Runs <paramref name="change"/> alone (the gate), then saves the state.</summary>
    private async Task<T> ChangeAsync<T>(Func<Task<T>> change, CancellationToken cancellationToken = default)
    {
        await _started.Task.WaitAsync(cancellationToken); // the API may be up before the registry has loaded the state
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_stopped) throw new HostApiException(503, Api.Contracts.ErrorCodes.Internal, "the host is stopping");
            RefuseIfRevoked(ActingToken.Value);
            var result = await change();
            await SaveAsync();
            return result;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// The tenant token the current request acts with (<see cref="Auth.TenantScopeFilter"/> sets it); a change
    /// checks it again under the gate, so a request authenticated just before a revoke does not run after it.
    /// </summary>
    internal static readonly AsyncLocal<(string Tenant, string TokenId)?> ActingToken = new();

    private void RefuseIfRevoked((string Tenant, string TokenId)? acting)
    {
        if (acting is not { } a) return;
        if (IsRevoked(a.Tenant)) throw new HostApiException(403, Api.Contracts.ErrorCodes.Forbidden, $"tenant '{a.Tenant}' is revoked");
        if (!_tokens.TryGetValue(a.TokenId, out var token) || token.Tenant != a.Tenant)
            throw new HostApiException(401, Api.Contracts.ErrorCodes.Unauthorized, "the bearer token is not valid");
    }

    private Task ChangeAsync(Func<Task> change) => ChangeAsync(async () => { await change(); return true; });

    private Task SaveAsync() => _store.SaveAsync(new HostState
    {
        Tenants = [.. _tenants.Values.OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => new PersistedTenant(t.Name, t.Quota.LimitBytes, t.MaxImages, t.Revoked))],
        // Cluster-owned images are sharding's to remember, not this node's.
        Images = [.. _tenants.Values.SelectMany(t => t.Images.Values).Where(i => !i.ClusterOwned).OrderBy(i => i.Key, StringComparer.Ordinal)
            .Select(i => new PersistedImage(i.Tenant, i.Name, i.Image is not null || (i.Failure is not null && i.WantOpen)))],
        Exports = [.. _exports.Values.Where(e => !e.Image.ClusterOwned).Select(e => new PersistedExport(e.Name, e.Image.Tenant, e.Image.Name, e.ReadOnly, e.Export.DirtyBitmaps, e.Export.AllocationDepth,
            e.Recording?.LogPath))
            .Concat(PendingExports).OrderBy(e => e.Name, StringComparer.Ordinal)],
        Limits = [.. _tenants.Values.Where(t => t.Limit is not null).Select(t => new PersistedLimit("tenant", t.Name, t.Limit!)),
            .. _exports.Values.Where(e => e.Limit is not null).Select(e => new PersistedLimit("export", e.Name, e.Limit!)),
            .. _pendingLimits.Where(l => PendingExports.Any(e => e.Name == l.Target))],
        Tokens = [.. _tokens.Values.OrderBy(t => t.Tenant, StringComparer.Ordinal).ThenBy(t => t.Created)
            .Select(t => new PersistedToken(t.Id, t.Tenant, Convert.ToHexStringLower(t.Hash), t.Created))],
    });

    /// <summary>Saved exports not served now whose image still exists and whose name nobody took since.</summary>
    private IEnumerable<PersistedExport> PendingExports => _pendingExports.Where(e =>
        !_exports.ContainsKey(e.Name) && _tenants.GetValueOrDefault(e.Tenant)?.Images.ContainsKey(e.Image) == true);

    private TenantEntry Tenant(string name) =>
        _tenants.GetValueOrDefault(name) ?? throw HostApiException.NotFound(Api.Contracts.ErrorCodes.TenantNotFound, $"no tenant named '{name}'");

    private ImageEntry Image(string tenant, string image) =>
        Tenant(tenant).Images.GetValueOrDefault(image)
        ?? throw HostApiException.NotFound(Api.Contracts.ErrorCodes.ImageNotFound, $"tenant '{tenant}' has no image named '{image}'");

    private string ImagePath(string tenant, string image) => Path.Combine(Settings.DataDir, tenant, image + ".qcow2");

    /// <summary>The URI a client connects to <paramref name="exportName"/> with ('/' kept, the rest escaped).</summary>
    public string UriOf(string exportName)
    {
        var path = string.Join('/', exportName.Split('/').Select(Uri.EscapeDataString));
        return _nbd?.LocalEndPoint switch
        {
            IPEndPoint ip when ip.AddressFamily == AddressFamily.InterNetworkV6 => $"nbd://[{ip.Address}]:{ip.Port}/{path}",
            IPEndPoint ip => $"nbd://{ip.Address}:{ip.Port}/{path}",
            UnixDomainSocketEndPoint unix => $"nbd+unix:///{path}?socket={unix}",
            _ => "",
        };
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None);
        _gate.Dispose();
    }
}
