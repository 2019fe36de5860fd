using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Nbd.Tests.Tls;

/// <summary>
/// Certificates made in memory for the TLS tests: a CA, a server certificate for localhost/127.0.0.1,
/// client certificates for two tenants, and a client certificate that another CA signed.
/// </summary>
internal sealed class TestPki : IDisposable
{
    public X509Certificate2 Authority { get; }
    public X509Certificate2 Server { get; }
    public X509Certificate2 AcmeClient { get; }
    public X509Certificate2 GlobexClient { get; }
    public X509Certificate2 StrangerClient { get; }
    private readonly X509Certificate2 _otherAuthority;

    public const string AcmeSubject = "CN=acme-vm1, O=Acme";
    public const string GlobexSubject = "CN=globex-vm1, O=Globex";

    /// <summary>One set for the whole test assembly: RSA key generation is the slow part.</summary>
    public static TestPki Shared { get; } = new();

    private TestPki()
    {
        Authority = MakeAuthority("CN=Test CA");
        _otherAuthority = MakeAuthority("CN=Other CA");
        Server = Issue(Authority, "CN=localhost", server: true, dns: "localhost");
        AcmeClient = Issue(Authority, AcmeSubject, server: false, dns: "vm1.acme.example");
        GlobexClient = Issue(Authority, GlobexSubject, server: false, dns: "vm1.globex.example");
        StrangerClient = Issue(_otherAuthority, AcmeSubject, server: false, dns: "vm1.acme.example");
    }

    public NbdTlsCredentials Credentials => NbdTlsCredentials.Create(Server, [Authority]);

    private static X509Certificate2 MakeAuthority(string subject)
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
    }

    private static X509Certificate2 Issue(X509Certificate2 authority, string subject, bool server, string dns)
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(server ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2")], false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(dns);
        if (server) san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        var serial = new byte[8];
        RandomNumberGenerator.Fill(serial);
        using var issued = request.Create(authority, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(29), serial);
        using var withKey = issued.CopyWithPrivateKey(key);
        // Through PKCS#12, so the key is usable by the TLS stack on every platform.
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }

    public void Dispose()
    {
        foreach (var cert in new[] { Authority, Server, AcmeClient, GlobexClient, StrangerClient, _otherAuthority }) cert.Dispose();
    }
}
