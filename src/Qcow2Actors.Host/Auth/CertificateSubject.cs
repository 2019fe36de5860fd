using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// Distinguished names compared as .NET formats them (RFC 4514 order, ", " between parts), so
/// "CN=ops,O=Acme" in the config matches a certificate whose subject is "CN=ops, O=Acme".
/// </summary>
internal static class CertificateSubject
{
    /// <exception cref="ArgumentException"><paramref name="subject"/> is not a distinguished name (message names <paramref name="key"/>).</exception>
    public static string Normalize(string subject, string key)
    {
        try
        {
            return new X500DistinguishedName(subject).Name;
        }
        catch (CryptographicException ex)
        {
            throw new ArgumentException($"{key} '{subject}' is not a distinguished name: {ex.Message}");
        }
    }

    public static string Of(X509Certificate2 certificate) => certificate.SubjectName.Name;
}
