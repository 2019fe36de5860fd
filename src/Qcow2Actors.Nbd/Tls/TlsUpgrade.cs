using System.Formats.Asn1;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Nbd.Tls;

/// <summary>
/// The server side of the TLS handshake after NBD_OPT_STARTTLS: TLS 1.2 or 1.3, the server's certificate,
/// and a client certificate that must chain to one of <see cref="NbdTlsCredentials.Authorities"/> alone
/// (custom root trust, the system store never consulted, no revocation fetch).
/// </summary>
internal sealed class TlsUpgrade
{
    /// <summary>OID of the subject alternative name extension.</summary>
    private const string SubjectAltNameOid = "2.5.29.17";

    // GeneralName choices (RFC 5280 4.2.1.6) we report: context-specific tags of rfc822Name, dNSName, uniformResourceIdentifier.
    private const int Rfc822NameTag = 1;
    private const int DnsNameTag = 2;
    private const int UriTag = 6;

    private readonly SslStreamCertificateContext _context;
    private readonly X509Certificate2Collection _authorities;

    public TlsUpgrade(NbdTlsCredentials credentials)
    {
        _authorities = credentials.Authorities;
        // Offline: building the server's chain must not wait on the network.
        _context = SslStreamCertificateContext.Create(credentials.ServerCertificate, additionalCertificates: null, offline: true);
    }

    /// <summary>
    /// Runs the handshake on <paramref name="transport"/>; the stream returned carries the rest of the connection.
    /// </summary>
    /// <exception cref="AuthenticationException">The handshake failed (no certificate, one the CA did not sign, no common protocol).</exception>
    public async Task<(SslStream Stream, NbdClientIdentity Identity)> AuthenticateAsync(Stream transport, EndPoint? remote, CancellationToken cancellationToken)
    {
        var ssl = new SslStream(transport, leaveInnerStreamOpen: true);
        try
        {
            await ssl.AuthenticateAsServerAsync(Options(), cancellationToken);
            // The stream owns its remote certificate (an X509Certificate2 on every platform we run on).
            if (ssl.RemoteCertificate is not X509Certificate2 certificate) throw new AuthenticationException("the client sent no certificate");
            var identity = new NbdClientIdentity
            {
                RemoteEndPoint = remote,
                Tls = true,
                Subject = certificate.SubjectName.Name,
                AlternativeNames = AlternativeNames(certificate),
            };
            return (ssl, identity);
        }
        catch
        {
            await ssl.DisposeAsync();
            throw;
        }
    }

    private SslServerAuthenticationOptions Options()
    {
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.AddRange(_authorities);
        return new SslServerAuthenticationOptions
        {
            ServerCertificateContext = _context,
            ClientCertificateRequired = true,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            CertificateChainPolicy = policy,
            // Anything short of a clean chain to our CA (absent, self-signed, another CA, expired) fails the handshake.
            RemoteCertificateValidationCallback = (_, certificate, _, errors) => certificate is not null && errors == SslPolicyErrors.None,
        };
    }

    /// <summary>DNS names, e-mail addresses and URIs of the certificate's SAN extension; other kinds are skipped.</summary>
    internal static IReadOnlyList<string> AlternativeNames(X509Certificate2 certificate)
    {
        var names = new List<string>();
        foreach (var extension in certificate.Extensions)
        {
            if (extension.Oid?.Value != SubjectAltNameOid) continue;
            try
            {
                var reader = new AsnReader(extension.RawData, AsnEncodingRules.DER).ReadSequence();
                while (reader.HasData)
                {
                    var tag = reader.PeekTag();
                    if (tag.TagClass == TagClass.ContextSpecific && tag.TagValue is Rfc822NameTag or DnsNameTag or UriTag)
                        names.Add(reader.ReadCharacterString(UniversalTagNumber.IA5String, tag));
                    else reader.ReadEncodedValue();
                }
            }
            catch (AsnContentException)
            {
                // A malformed SAN names nobody; the subject still identifies the client.
            }
        }
        return names;
    }
}
