using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Nbd;

/// <summary>
/// The server's x509 credentials, laid out as QEMU's <c>tls-creds-x509</c> directory: the
/// authorities client certificates must chain to (<c>ca-cert.pem</c>), and the server's own
/// certificate and private key (<c>server-cert.pem</c>, <c>server-key.pem</c>).
/// </summary>
public sealed class NbdTlsCredentials
{
    /// <summary>File of the certificate authorities, in PEM (one or more certificates).</summary>
    public const string CaCertFile = "ca-cert.pem";

    /// <summary>File of the server's certificate, in PEM.</summary>
    public const string ServerCertFile = "server-cert.pem";

    /// <summary>File of the server's private key, in PEM (PKCS#8, PKCS#1 or SEC1), unencrypted.</summary>
    public const string ServerKeyFile = "server-key.pem";

    private NbdTlsCredentials(X509Certificate2 serverCertificate, X509Certificate2Collection authorities)
    {
        ServerCertificate = serverCertificate;
        Authorities = authorities;
    }

    /// <summary>The certificate (with its private key) the server presents.</summary>
    public X509Certificate2 ServerCertificate { get; }

    /// <summary>The only roots a client certificate is verified against (the system store is never consulted).</summary>
    public X509Certificate2Collection Authorities { get; }

    /// <summary>Credentials from explicit certificates (tests, embedders); <paramref name="serverCertificate"/> must hold its private key.</summary>
    /// <exception cref="ArgumentException">The server certificate has no private key, or no authority is given.</exception>
    public static NbdTlsCredentials Create(X509Certificate2 serverCertificate, X509Certificate2Collection authorities)
    {
        ArgumentNullException.ThrowIfNull(serverCertificate);
        ArgumentNullException.ThrowIfNull(authorities);
        if (!serverCertificate.HasPrivateKey) throw new ArgumentException("the server certificate has no private key", nameof(serverCertificate));
        if (authorities.Count == 0) throw new ArgumentException("at least one certificate authority is required", nameof(authorities));
        return new NbdTlsCredentials(serverCertificate, authorities);
    }

    /// <summary>
    /// Loads <c>ca-cert.pem</c>, <c>server-cert.pem</c> and <c>server-key.pem</c> from <paramref name="directory"/>.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// The directory or a file is missing, unreadable or not valid PEM, or the key does not belong to the
    /// certificate; the message is one line naming the file.
    /// </exception>
    public static NbdTlsCredentials LoadX509Directory(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (!Directory.Exists(directory)) throw new ArgumentException($"{directory}: no such TLS credentials directory");
        var caPath = Path.Combine(directory, CaCertFile);
        var certPath = Path.Combine(directory, ServerCertFile);
        var keyPath = Path.Combine(directory, ServerKeyFile);
        foreach (var path in new[] { caPath, certPath, keyPath })
            if (!File.Exists(path)) throw new ArgumentException($"{path}: file not found");

        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(caPath);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"{caPath}: {OneLine(ex.Message)}", ex);
        }
        if (authorities.Count == 0) throw new ArgumentException($"{caPath}: no certificate in the file");

        X509Certificate2 server;
        try
        {
            server = PemCertificates.LoadWithKey(certPath, keyPath); // certtool's EC keys too
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            // The loader does not say which of the two files it choked on: the certificate alone tells.
            var culprit = CertificateLoads(certPath) ? keyPath : certPath;
            throw new ArgumentException($"{culprit}: {OneLine(ex.Message)}", ex);
        }
        return new NbdTlsCredentials(server, authorities);
    }

    private static bool CertificateLoads(string path)
    {
        try
        {
            using var cert = X509Certificate2.CreateFromPem(File.ReadAllText(path));
            return true;
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            return false;
        }
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();
}
