using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Host.Tests.Auth;

/// <summary>
/// A CA, a server certificate for 127.0.0.1 and client certificates, made in process and written as PEM files
/// (ca.pem, server-cert.pem, server-key.pem, NAME-cert.pem, NAME-key.pem) to a directory.
/// </summary>
public sealed class TestCertificates
{
    private readonly ECDsa _caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly X509Certificate2 _ca;

    public TestCertificates(string directory, string caName = "CN=q2a test CA")
    {
        Directory = directory;
        System.IO.Directory.CreateDirectory(directory);
        var request = new CertificateRequest(caName, _caKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        _ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        File.WriteAllText(CaFile, _ca.ExportCertificatePem());
        Issue("server", "CN=127.0.0.1", server: true);
    }

    public string Directory { get; }
    public string CaFile => Path.Combine(Directory, "ca.pem");
    public string CertFile(string name) => Path.Combine(Directory, name + "-cert.pem");
    public string KeyFile(string name) => Path.Combine(Directory, name + "-key.pem");

    /// <summary>
    /// Issues a certificate for <paramref name="subject"/> signed by this CA and writes NAME-cert.pem and NAME-key.pem;
    /// <paramref name="caIssuers"/>: an authorityInfoAccess caIssuers URL it carries.
    /// </summary>
    public void Issue(string name, string subject, bool server = false, string? caIssuers = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        san.AddDnsName("localhost");
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(server ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(_ca, true, false));
        if (caIssuers is not null) request.CertificateExtensions.Add(new X509AuthorityInformationAccessExtension(null, [caIssuers]));
        var serial = RandomNumberGenerator.GetBytes(8);
        serial[0] = (byte)((serial[0] & 0x7F) | 0x01); // positive and minimally encoded, or Create may refuse it
        using var certificate = request.Create(_ca, _ca.NotBefore, _ca.NotAfter, serial);
        File.WriteAllText(CertFile(name), certificate.ExportCertificatePem());
        File.WriteAllText(KeyFile(name), key.ExportPkcs8PrivateKeyPem());
    }

    /// <summary>The host config that serves the control port with these certificates, plus <paramref name="more"/> inside <c>control { }</c>.</summary>
    public string HostConfig(string more = "") => $$"""
        qcow2actors.host.control {
          tls { cert = "{{CertFile("server")}}", key = "{{KeyFile("server")}}", ca = "{{CaFile}}" }
          {{more}}
        }
        """;

    /// <summary>
    /// An HTTPS client of 127.0.0.1:<paramref name="port"/> trusting this CA, with client certificate <paramref name="client"/>
    /// (issued by <paramref name="issuer"/>, default this CA) when given.
    /// </summary>
    public HttpClient Client(int port, string? client = null, string? token = null, TestCertificates? issuer = null)
    {
        issuer ??= this;
        var authorities = new X509Certificate2Collection();
        authorities.ImportFromPemFile(CaFile);
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, _) =>
        {
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return certificate is X509Certificate2 c && chain.Build(c);
        };
        // Offline: the client must not fetch its own certificate's AIA URLs either (a test watches who does).
        if (client is not null)
            handler.SslOptions.ClientCertificateContext = System.Net.Security.SslStreamCertificateContext.Create(
                X509Certificate2.CreateFromPemFile(issuer.CertFile(client), issuer.KeyFile(client)), null, offline: true);
        var http = new HttpClient(handler) { BaseAddress = new Uri($"https://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(60) };
        if (token is not null) http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    public static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
