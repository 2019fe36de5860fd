using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Nbd;

/// <summary>Who is on the other end of an NBD connection, as far as the server knows.</summary>
public sealed record NbdClientIdentity
{
    /// <summary>The client's address (null on a Unix socket without one).</summary>
    public EndPoint? RemoteEndPoint { get; init; }

    /// <summary>True once NBD_OPT_STARTTLS succeeded (the client certificate was verified against the CA).</summary>
    public bool Tls { get; init; }

    /// <summary>The verified client certificate's subject as <see cref="X500DistinguishedName.Name"/> gives it (e.g. <c>CN=vm1, O=Acme</c>); null without TLS.</summary>
    public string? Subject { get; init; }

    /// <summary>The DNS names, e-mail addresses and URIs in that certificate's subject alternative names.</summary>
    public IReadOnlyList<string> AlternativeNames { get; init; } = [];

    /// <summary>
    /// True when <see cref="Subject"/> is the distinguished name <paramref name="distinguishedName"/>, however it is
    /// spaced (<c>CN=vm1,O=Acme</c> and <c>CN=vm1, O=Acme</c> are the same name); RDN order and attribute values must match.
    /// </summary>
    public bool SubjectIs(string distinguishedName)
    {
        ArgumentNullException.ThrowIfNull(distinguishedName);
        if (Subject is null || Canonical(Subject) is not { } mine || Canonical(distinguishedName) is not { } theirs) return false;
        return string.Equals(mine, theirs, StringComparison.Ordinal);
    }

    /// <summary>True when the subject is <paramref name="name"/> (see <see cref="SubjectIs"/>) or a subject alternative name equals it (DNS names ignoring case).</summary>
    public bool Matches(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (SubjectIs(name)) return true;
        foreach (var alternative in AlternativeNames)
            if (string.Equals(alternative, name, StringComparison.OrdinalIgnoreCase)) return true;
        return false;
    }

    private static string? Canonical(string name)
    {
        try
        {
            // Round trip through the DER encoding (Name would echo the string as given): the decoder then
            // spaces and quotes both sides alike, most specific RDN first as RFC 4514 writes it.
            return new X500DistinguishedName(name).Decode(X500DistinguishedNameFlags.Reversed);
        }
        catch (System.Security.Cryptography.CryptographicException)
        {
            return null;
        }
    }
}
