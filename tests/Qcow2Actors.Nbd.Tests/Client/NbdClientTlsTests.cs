using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Qcow2Actors.Nbd.Client;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Tests.Tls;
using Qcow2Actors.Nbd.Tls;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests.Client;

/// <summary><see cref="NbdClient"/> over TLS against our server, with credentials in QEMU's x509 directory layout.</summary>
public sealed class NbdClientTlsTests : IDisposable
{
    private const int MiB = 1024 * 1024;
    private static TestPki Pki => TestPki.Shared;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static async Task<NbdServer> StartAsync(INbdExport export)
    {
        var server = new NbdServer(NbdServerOptions.Tcp([export], port: 0) with { TlsMode = NbdTlsMode.Required, TlsCredentials = Pki.Credentials });
        await server.StartAsync();
        return server;
    }

    /// <summary>A client directory: ca-cert.pem, and the acme client certificate with its key unless <paramref name="withClientCertificate"/> is false.</summary>
    private string ClientDir(string name, X509Certificate2 authority, bool withClientCertificate = true)
    {
        var dir = Directory.CreateDirectory(_dir.File(name)).FullName;
        File.WriteAllText(Path.Combine(dir, "ca-cert.pem"), authority.ExportCertificatePem());
        if (withClientCertificate)
        {
            File.WriteAllText(Path.Combine(dir, "client-cert.pem"), Pki.AcmeClient.ExportCertificatePem());
            File.WriteAllText(Path.Combine(dir, "client-key.pem"), Pki.AcmeClient.GetRSAPrivateKey()!.ExportPkcs8PrivateKeyPem());
        }
        return dir;
    }

    private static NbdClientOptions Options(NbdServer server, NbdClientTls? tls) =>
        new() { Host = "127.0.0.1", Port = ((IPEndPoint)server.LocalEndPoint!).Port, ExportName = "disk", Tls = tls };

    [Fact]
    public async Task Reads_and_writes_over_tls_with_a_client_certificate()
    {
        var export = new MemoryExport("disk", MiB);
        await using var server = await StartAsync(export);
        await using var client = await NbdClient.ConnectAsync(Options(server, new NbdClientTls { Directory = ClientDir("acme", Pki.Authority) }));

        var data = TestServers.RandomBytes(100_000, seed: 11);
        await client.WriteAsync(4096, data);
        var back = new byte[data.Length];
        await client.ReadAsync(4096, back);
        Assert.Equal(data, back);
        Assert.Equal(data, export.ToArray().AsSpan(4096, data.Length).ToArray());
        Assert.Equal(["base:allocation"], client.MetaContexts);
    }

    [Fact]
    public async Task A_server_that_requires_tls_is_one_line_when_the_client_has_none()
    {
        await using var server = await StartAsync(new MemoryExport("disk", MiB));
        var ex = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(Options(server, tls: null)));
        Assert.Equal($"nbd server 127.0.0.1:{((IPEndPoint)server.LocalEndPoint!).Port} requires TLS for export 'disk' (NBD_REP_ERR_TLS_REQD); connect with TLS credentials", ex.Message);
    }

    [Fact]
    public async Task A_server_certificate_for_another_name_fails_verification()
    {
        await using var server = await StartAsync(new MemoryExport("disk", MiB));
        var tls = new NbdClientTls { Directory = ClientDir("acme", Pki.Authority), Hostname = "elsewhere.example" };
        var ex = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(Options(server, tls)));
        Assert.StartsWith($"TLS verification of nbd server 127.0.0.1:{((IPEndPoint)server.LocalEndPoint!).Port} failed for export 'disk': ", ex.Message);
        Assert.Contains("its certificate is not for 'elsewhere.example'", ex.Message);
    }

    [Fact]
    public async Task A_server_certificate_another_ca_signed_fails_verification()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=Somebody Else", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var stranger = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        await using var server = await StartAsync(new MemoryExport("disk", MiB));

        var ex = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(Options(server, new NbdClientTls { Directory = ClientDir("other", stranger) })));
        Assert.Contains("failed for export 'disk': its certificate does not chain to ca-cert.pem", ex.Message);
    }

    [Fact]
    public async Task A_directory_without_ca_cert_is_named()
    {
        await using var server = await StartAsync(new MemoryExport("disk", MiB));
        var empty = Directory.CreateDirectory(_dir.File("empty")).FullName;
        var ex = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(Options(server, new NbdClientTls { Directory = empty })));
        Assert.Equal($"TLS directory {empty} has no ca-cert.pem", ex.Message);
    }
}
