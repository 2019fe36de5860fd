using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// Distinguished names compared part by part: attribute types case-insensitive, blanks around ',' and '='
/// ignored, values exact, the order of the parts ignored (openssl, certtool and .NET print them in different
/// orders), so "CN=ops,O=Acme" in the config matches a certificate whose subject .NET prints as "O=Acme, CN=ops".
/// </summary>
internal static class CertificateSubject
{
    /// <exception cref="ArgumentException"><paramref name="subject"/> is not TYPE=VALUE parts (message names <paramref name="key"/>).</exception>
    public static string Normalize(string subject, string key) =>
        TryNormalize(subject) ?? throw new ArgumentException($"{key} '{subject}' is not a distinguished name (TYPE=VALUE, separated by ',')");

    /// <summary>The subject of <paramref name="certificate"/>, as .NET prints it (RFC 4514 order).</summary>
    public static string Of(X509Certificate2 certificate) => certificate.SubjectName.Name;

    /// <summary>The comparable form of <paramref name="subject"/>; null when a part has no '='.</summary>
    public static string? TryNormalize(string subject)
    {
        var parts = new List<string>();
        var part = new StringBuilder();
        for (int i = 0; i < subject.Length; i++)
        {
            char c = subject[i];
            if (c == '\\' && i + 1 < subject.Length)
            {
                part.Append(c).Append(subject[++i]); // an escaped ',' stays in the value
                continue;
            }
            if (c == ',')
            {
                parts.Add(part.ToString());
                part.Clear();
                continue;
            }
            part.Append(c);
        }
        parts.Add(part.ToString());
        var normalized = new List<string>();
        foreach (var p in parts)
        {
            int eq = p.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0) return null;
            normalized.Add(p[..eq].Trim().ToUpperInvariant() + "=" + p[(eq + 1)..].Trim());
        }
        normalized.Sort(StringComparer.Ordinal);
        return string.Join(",", normalized);
    }
}
