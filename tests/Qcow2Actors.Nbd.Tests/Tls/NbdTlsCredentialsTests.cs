using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Nbd.Tests.Tls;

/// <summary>Loading QEMU's tls-creds-x509 directory layout and matching client identities.</summary>
public sealed class NbdTlsCredentialsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("q2a-tls-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private void WriteDirectory()
    {
        var pki = TestPki.Shared;
        File.WriteAllText(Path.Combine(_dir, "ca-cert.pem"), pki.Authority.ExportCertificatePem());
        File.WriteAllText(Path.Combine(_dir, "server-cert.pem"), pki.Server.ExportCertificatePem());
        File.WriteAllText(Path.Combine(_dir, "server-key.pem"), pki.Server.GetRSAPrivateKey()!.ExportPkcs8PrivateKeyPem());
    }

    [Fact]
    public void A_qemu_layout_directory_loads_the_server_certificate_with_its_key_and_the_authority()
    {
        WriteDirectory();
        var credentials = NbdTlsCredentials.LoadX509Directory(_dir);
        Assert.True(credentials.ServerCertificate.HasPrivateKey);
        Assert.Equal(TestPki.Shared.Server.Thumbprint, credentials.ServerCertificate.Thumbprint);
        Assert.Equal(TestPki.Shared.Authority.Thumbprint, Assert.Single(credentials.Authorities).Thumbprint);
    }

    [Theory]
    [InlineData("ca-cert.pem")]
    [InlineData("server-cert.pem")]
    [InlineData("server-key.pem")]
    public void A_missing_or_invalid_file_is_named_in_one_line(string file)
    {
        WriteDirectory();
        var path = Path.Combine(_dir, file);
        File.Delete(path);
        var missing = Assert.Throws<ArgumentException>(() => NbdTlsCredentials.LoadX509Directory(_dir)).Message;
        Assert.StartsWith(path + ":", missing);
        File.WriteAllText(path, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
        var invalid = Assert.Throws<ArgumentException>(() => NbdTlsCredentials.LoadX509Directory(_dir)).Message;
        Assert.StartsWith(path + ":", invalid);
        Assert.DoesNotContain('\n', invalid);
    }

    [Fact]
    public void A_key_that_is_not_the_certificates_names_the_key_file()
    {
        WriteDirectory();
        File.WriteAllText(Path.Combine(_dir, "server-key.pem"), TestPki.Shared.AcmeClient.GetRSAPrivateKey()!.ExportPkcs8PrivateKeyPem());
        Assert.StartsWith(Path.Combine(_dir, "server-key.pem") + ":", Assert.Throws<ArgumentException>(() => NbdTlsCredentials.LoadX509Directory(_dir)).Message);
    }

    [Fact]
    public void An_identity_matches_its_subject_however_spaced_and_its_alternative_names()
    {
        var identity = new NbdClientIdentity { Tls = true, Subject = TestPki.Shared.AcmeClient.SubjectName.Name, AlternativeNames = Qcow2Actors.Nbd.Tls.TlsUpgrade.AlternativeNames(TestPki.Shared.AcmeClient) };
        Assert.True(identity.SubjectIs("CN=acme-vm1,O=Acme"));
        Assert.True(identity.Matches("CN=acme-vm1, O=Acme"));
        Assert.True(identity.Matches("VM1.acme.example"));
        Assert.False(identity.Matches("CN=acme-vm2,O=Acme"));
        Assert.False(identity.Matches("O=Acme,CN=acme-vm1")); // another order is another name
        Assert.False(identity.Matches("not a name"));
        Assert.False(new NbdClientIdentity().Matches("CN=acme-vm1,O=Acme"));
    }
}
