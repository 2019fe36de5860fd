using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Auth;

namespace Qcow2Actors.Host.Registry;

/// <summary>Tenants' API tokens (created and revoked through the API) and the revocation of a whole tenant.</summary>
internal sealed partial class HostRegistry
{
    private readonly ConcurrentDictionary<string, TokenEntry> _tokens = new(StringComparer.Ordinal);

    /// <summary>A new token for <paramref name="tenantName"/>: the reply carries the token, once; only its hash is kept.</summary>
    public Task<TokenReply> CreateTokenAsync(string tenantName) => ChangeAsync(() =>
    {
        Tenant(tenantName);
        var token = TokenHash.NewToken();
        var entry = new TokenEntry(TokenHash.NewId(), tenantName, TokenHash.Of(token), time.GetUtcNow());
        _tokens[entry.Id] = entry;
        _log.LogInformation("token {Id} created for tenant {Tenant}", entry.Id, tenantName);
        return Task.FromResult(ToReply(entry) with { Token = token });
    });

    public IReadOnlyList<TokenReply> ListTokens(string tenantName)
    {
        Tenant(tenantName);
        return [.. _tokens.Values.Where(t => t.Tenant == tenantName).OrderBy(t => t.Created).ThenBy(t => t.Id, StringComparer.Ordinal).Select(ToReply)];
    }

    public Task RevokeTokenAsync(string tenantName, string id) => ChangeAsync(() =>
    {
        Tenant(tenantName);
        if (!_tokens.TryGetValue(id, out var entry) || entry.Tenant != tenantName)
            throw HostApiException.NotFound(ErrorCodes.TokenNotFound, $"tenant '{tenantName}' has no token '{id}'");
        _tokens.TryRemove(id, out _);
        _log.LogInformation("token {Id} of tenant {Tenant} revoked", id, tenantName);
        return Task.CompletedTask;
    });

    /// <summary>The tenant token whose hash is <paramref name="hash"/>; every token is compared, in constant time.</summary>
    public TokenEntry? FindToken(byte[] hash)
    {
        TokenEntry? found = null;
        foreach (var token in _tokens.Values)
            if (TokenHash.Equal(token.Hash, hash)) found = token;
        return found;
    }

    public bool IsRevoked(string tenantName) => _tenants.GetValueOrDefault(tenantName)?.Revoked ?? true;

    /// <summary>
    /// Revokes the tenant: its tokens are refused from now on, its exports leave the NBD server (new clients get
    /// "unknown export", TLS or not) and every NBD connection of it is cut off, all before the reply. Its images
    /// and exports stay in the registry and are served again when it is restored.
    /// </summary>
    public Task<TenantReply> RevokeTenantAsync(string name) => ChangeAsync(async () =>
    {
        var entry = Tenant(name);
        entry.Revoked = true;
        int cut = 0;
        if (_nbd is not null)
        {
            foreach (var export in _exports.Values.Where(e => e.Image.Tenant == name))
            {
                cut += _nbd.GetConnectionCount(export.Name);
                // Already cancelled: its clients are cut off at once, not waited for.
                await _nbd.RemoveExportAsync(export.Name, new CancellationToken(canceled: true));
            }
            cut += await _nbd.DisconnectTenantAsync(name); // those still negotiating
        }
        _log.LogWarning("tenant {Tenant} revoked; {Connections} NBD connection(s) closed", name, cut);
        return ToReply(entry);
    });

    public Task<TenantReply> RestoreTenantAsync(string name) => ChangeAsync(() =>
    {
        var entry = Tenant(name);
        if (entry.Revoked && _nbd is not null)
            foreach (var export in _exports.Values.Where(e => e.Image.Tenant == name)) _nbd.AddExport(export.Served);
        entry.Revoked = false;
        _log.LogInformation("tenant {Tenant} restored", name);
        return Task.FromResult(ToReply(entry));
    });

    private void LoadTokens(IEnumerable<PersistedToken> tokens)
    {
        foreach (var t in tokens)
        {
            if (!_tenants.ContainsKey(t.Tenant))
            {
                _log.LogWarning("host state names token '{Id}' of unknown tenant '{Tenant}'; dropped", t.Id, t.Tenant);
                continue;
            }
            byte[] hash;
            try
            {
                hash = Convert.FromHexString(t.Sha256);
            }
            catch (FormatException)
            {
                throw new InvalidDataException($"'{_store.Path}': token '{t.Id}' has a malformed sha256");
            }
            if (hash.Length != 32) throw new InvalidDataException($"'{_store.Path}': token '{t.Id}' has a sha256 of {hash.Length} bytes");
            _tokens[t.Id] = new TokenEntry(t.Id, t.Tenant, hash, t.Created);
        }
    }

    private void ForgetTokens(string tenantName)
    {
        foreach (var t in _tokens.Values.Where(t => t.Tenant == tenantName).ToList()) _tokens.TryRemove(t.Id, out _);
    }

    private static TokenReply ToReply(TokenEntry t) => new() { Id = t.Id, Tenant = t.Tenant, Created = t.Created };
}
