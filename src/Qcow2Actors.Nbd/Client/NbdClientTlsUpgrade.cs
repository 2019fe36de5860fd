using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// The client side of TLS after NBD_OPT_STARTTLS, as QEMU's tls-creds-x509 endpoint=client does it: the server's
/// certificate must chain to ca-cert.pem alone (never the system store) and carry the expected name; client-cert.pem
/// with client-key.pem is presented when the directory has them.
/// </summary>
internal static class NbdClientTlsUpgrade
{
    public const string CaFile = "ca-cert.pem";
    public const string ClientCertFile = "client-cert.pem";
    public const string ClientKeyFile = "client-key.pem";

    public static async Task<SslStream> AuthenticateAsync(Stream transport, NbdClientTls tls, NbdClientOptions options, CancellationToken ct)
    {
        var endpoint = options.Endpoint;
        var (authorities, clientCertificate) = LoadCredentials(tls.Directory);
        var hostname = tls.Hostname ?? options.Host ?? "localhost";
        SslPolicyErrors seen = SslPolicyErrors.None;
        X509ChainStatusFlags chainStatus = X509ChainStatusFlags.NoError;
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.AddRange(authorities);
        var ssl = new SslStream(transport, leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = hostname,
                ClientCertificates = clientCertificate is null ? null : [clientCertificate],
                CertificateChainPolicy = policy,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
                {
                    seen = errors;
                    foreach (var status in chain?.ChainStatus ?? []) chainStatus |= status.Status;
                    return certificate is not null && errors == SslPolicyErrors.None;
                },
            }, ct);
            return ssl;
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException)
        {
            await ssl.DisposeAsync();
            if (seen != SslPolicyErrors.None)
                throw new IOException($"TLS verification of nbd server {endpoint} failed for export '{options.ExportName}': {Reason(seen, chainStatus, hostname)}", ex);
            throw new IOException($"TLS handshake with nbd server {endpoint} failed for export '{options.ExportName}': {NbdClientErrors.OneLine(ex.InnerException?.Message ?? ex.Message)}", ex);
        }
    }

    private static string Reason(SslPolicyErrors errors, X509ChainStatusFlags chain, string hostname)
    {
        var reasons = new List<string>();
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable)) reasons.Add("it sent no certificate");
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch)) reasons.Add($"its certificate is not for '{hostname}'");
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateChainErrors))
            reasons.Add(chain == X509ChainStatusFlags.NoError ? "its certificate does not chain to ca-cert.pem" : $"its certificate does not chain to ca-cert.pem ({chain})");
        return string.Join("; ", reasons);
    }

    private static (X509Certificate2Collection Authorities, X509Certificate2? Client) LoadCredentials(string directory)
    {
        var caPath = Path.Combine(directory, CaFile);
        if (!File.Exists(caPath)) throw new IOException($"TLS directory {directory} has no {CaFile}");
        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(caPath);
        }
        catch (CryptographicException ex)
        {
            throw new IOException($"{caPath}: not a PEM certificate ({ex.Message})", ex);
        }
        if (authorities.Count == 0) throw new IOException($"{caPath}: holds no certificate");
        var certPath = Path.Combine(directory, ClientCertFile);
        var keyPath = Path.Combine(directory, ClientKeyFile);
        if (!File.Exists(certPath) || !File.Exists(keyPath)) return (authorities, null);
        try
        {
            return (authorities, PemCertificates.LoadWithKey(certPath, keyPath));
        }
        catch (CryptographicException ex)
        {
            throw new IOException($"{certPath} with {keyPath}: cannot load the client certificate ({ex.Message})", ex);
        }
    }
}
