using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// The control port's TLS: the host's certificate and key (PEM), and client certificates verified against
/// the configured CA alone (the system's roots do not count, revocation is not checked).
/// </summary>
internal static class ControlTls
{
    /// <exception cref="ArgumentException">A PEM file that does not load (one line naming it).</exception>
    public static HttpsConnectionAdapterOptions Options(ControlAuthSettings settings)
    {
        X509Certificate2 server;
        try
        {
            server = PemCertificates.LoadWithKey(settings.TlsCert!, settings.TlsKey!);
        }
        catch (CryptographicException ex)
        {
            throw new ArgumentException($"qcow2actors.host.control.tls: cannot load '{settings.TlsCert}' with key '{settings.TlsKey}': {ex.Message}");
        }
        var options = new HttpsConnectionAdapterOptions { ServerCertificate = server, ClientCertificateMode = ClientCertificateMode.NoCertificate };
        if (settings.TlsCa is { } caFile)
        {
            var authorities = new X509Certificate2Collection();
            try
            {
                authorities.ImportFromPemFile(caFile);
            }
            catch (CryptographicException ex)
            {
                throw new ArgumentException($"qcow2actors.host.control.tls.ca '{caFile}' is not a PEM certificate: {ex.Message}");
            }
            if (authorities.Count == 0) throw new ArgumentException($"qcow2actors.host.control.tls.ca '{caFile}' holds no certificate");
            options.ClientCertificateMode = ClientCertificateMode.AllowCertificate; // a token is the other way in
            options.CheckCertificateRevocation = false;
            // SslStream builds the client's chain before any callback runs: with its default policy an unauthenticated
            // client's certificate could make the host fetch its AIA URLs. Our policy: the CA alone, no downloads.
            options.OnAuthenticate = (_, ssl) =>
            {
                ssl.CertificateRevocationCheckMode = X509RevocationMode.NoCheck;
                ssl.CertificateChainPolicy = Policy(authorities);
            };
            options.ClientCertificateValidation = (certificate, _, errors) => errors == SslPolicyErrors.None && Verify(certificate, authorities);
        }
        return options;
    }

    /// <summary>True when <paramref name="certificate"/> chains to one of <paramref name="authorities"/>.</summary>
    public static bool Verify(X509Certificate2 certificate, X509Certificate2Collection authorities)
    {
        using var chain = new X509Chain { ChainPolicy = Policy(authorities) };
        return chain.Build(certificate);
    }

    /// <summary>Trust <paramref name="authorities"/> alone; never fetch anything a certificate names (AIA, CRL).</summary>
    private static X509ChainPolicy Policy(X509Certificate2Collection authorities)
    {
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            VerificationFlags = X509VerificationFlags.NoFlag,
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.AddRange(authorities);
        return policy;
    }
}
