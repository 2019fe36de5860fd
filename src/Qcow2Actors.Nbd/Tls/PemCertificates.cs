using System.Formats.Asn1;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Nbd;

/// <summary>
/// Loads a PEM certificate with its PEM private key, including the EC keys GnuTLS's certtool writes: about half
/// of them store the private scalar with a leading zero byte (33 bytes for P-256), which .NET's own SEC1 reader
/// refuses as "ASN1 corrupted data". Such a key is read here field by field, the zero dropped.
/// </summary>
public static class PemCertificates
{
    /// <summary>The certificate in <paramref name="certFile"/> with the private key in <paramref name="keyFile"/>.</summary>
    /// <exception cref="CryptographicException">A file that is not PEM, a key that does not match the certificate.</exception>
    /// <exception cref="IOException">A file that cannot be read.</exception>
    public static X509Certificate2 LoadWithKey(string certFile, string keyFile)
    {
        try
        {
            return X509Certificate2.CreateFromPemFile(certFile, keyFile);
        }
        catch (CryptographicException) when (PaddedEcKey(File.ReadAllText(keyFile)) is { } parameters)
        {
            using var certificate = X509Certificate2.CreateFromPem(File.ReadAllText(certFile)); // the certificate alone
            using var key = ECDsa.Create(parameters);
            return ECDsaCertificateExtensions.CopyWithPrivateKey(certificate, key);
        }
    }

    /// <summary>The SEC1 "EC PRIVATE KEY" in <paramref name="pem"/> when its scalar carries leading zeros; null otherwise.</summary>
    private static ECParameters? PaddedEcKey(string pem)
    {
        const string Label = "EC PRIVATE KEY";
        if (!PemEncoding.TryFind(pem, out var fields) || pem[fields.Label] != Label) return null;
        try
        {
            var der = Convert.FromBase64String(pem[fields.Base64Data].ToString());
            var sequence = new AsnReader(der, AsnEncodingRules.BER).ReadSequence();
            if (!sequence.TryReadInt32(out var version) || version != 1) return null;
            var scalar = sequence.ReadOctetString();
            var curve = sequence.ReadSequence(new Asn1Tag(TagClass.ContextSpecific, 0)).ReadObjectIdentifier();
            var point = sequence.ReadSequence(new Asn1Tag(TagClass.ContextSpecific, 1)).ReadBitString(out _);
            int size = (point.Length - 1) / 2; // uncompressed point: 04 || X || Y
            if (point.Length < 3 || point[0] != 4 || point.Length != 1 + 2 * size) return null;
            int zeros = scalar.Length - size;
            if (zeros <= 0 || scalar.AsSpan(0, zeros).ContainsAnyExcept((byte)0)) return null;
            return new ECParameters
            {
                Curve = ECCurve.CreateFromValue(curve),
                D = scalar[zeros..],
                Q = new ECPoint { X = point[1..(1 + size)], Y = point[(1 + size)..] },
            };
        }
        catch (Exception e) when (e is AsnContentException or FormatException)
        {
            return null;
        }
    }
}
