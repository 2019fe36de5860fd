using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Qcow2Actors.Nbd;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests.Tls;

public class PemCertificatesTests
{
    [Fact]
    public void An_ec_key_whose_scalar_has_a_leading_zero_as_certtool_writes_it_loads_with_its_certificate()
    {
        using var dir = new TempDir();
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var certificate = new CertificateRequest("CN=padded", key, HashAlgorithmName.SHA256)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        var p = key.ExportParameters(includePrivateParameters: true);
        var writer = new AsnWriter(AsnEncodingRules.DER);
        using (writer.PushSequence())
        {
            writer.WriteInteger(1);
            writer.WriteOctetString([0, .. p.D!]); // 33 bytes, as GnuTLS writes about half of its P-256 keys
            using (writer.PushSequence(new Asn1Tag(TagClass.ContextSpecific, 0))) writer.WriteObjectIdentifier(p.Curve.Oid.Value!);
            using (writer.PushSequence(new Asn1Tag(TagClass.ContextSpecific, 1))) writer.WriteBitString([4, .. p.Q.X!, .. p.Q.Y!]);
        }
        File.WriteAllText(dir.File("cert.pem"), certificate.ExportCertificatePem());
        File.WriteAllText(dir.File("key.pem"), PemEncoding.WriteString("EC PRIVATE KEY", writer.Encode()));
        Assert.ThrowsAny<CryptographicException>(() => X509Certificate2.CreateFromPemFile(dir.File("cert.pem"), dir.File("key.pem")));

        using var loaded = PemCertificates.LoadWithKey(dir.File("cert.pem"), dir.File("key.pem"));

        Assert.True(loaded.HasPrivateKey);
        using var signer = loaded.GetECDsaPrivateKey()!;
        byte[] data = [1, 2, 3];
        var signature = signer.SignData(data, HashAlgorithmName.SHA256);
        Assert.True(key.VerifyData(data, signature, HashAlgorithmName.SHA256));
    }
}
