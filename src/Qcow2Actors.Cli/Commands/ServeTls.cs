using Qcow2Actors.Nbd;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a serve</c>'s TLS options, as qemu-nbd's: <c>--tls-creds DIR</c> (QEMU's tls-creds-x509 layout:
/// ca-cert.pem, server-cert.pem, server-key.pem), <c>--tls off|optional|required</c> (required when
/// credentials are given, as qemu-nbd) and <c>--tls-authz SUBJECT</c> (repeatable: only clients whose
/// certificate subject is one of these are served, as qemu's authz-simple).
/// </summary>
internal static class ServeTls
{
    /// <summary>The settings with TLS applied; bad input is an <see cref="ArgumentException"/> naming the option or file.</summary>
    public static ServeSettings Apply(ServeSettings settings, string? credentialsDirectory, string? mode, string[]? authz)
    {
        var tlsMode = ParseMode(mode, credentialsDirectory is not null);
        authz ??= [];
        if (tlsMode == NbdTlsMode.Off)
        {
            if (authz.Length > 0) throw new ArgumentException("--tls-authz needs TLS (--tls-creds DIR)");
            return settings;
        }
        if (credentialsDirectory is null) throw new ArgumentException($"--tls {mode} needs --tls-creds DIR");
        // As qemu-nbd: an allow-list means every client must show a certificate, which --tls optional does not ask for.
        if (tlsMode == NbdTlsMode.Optional && authz.Length > 0)
            throw new ArgumentException("--tls-authz needs --tls required (with --tls optional a plain-text client shows no certificate)");
        var credentials = NbdTlsCredentials.LoadX509Directory(credentialsDirectory);
        foreach (var subject in authz)
        {
            if (!IsDistinguishedName(subject))
                throw new ArgumentException($"--tls-authz '{subject}' is not a distinguished name (e.g. CN=client1,O=Example)");
        }
        return settings with { TlsMode = tlsMode, TlsCredentials = credentials, TlsAuthz = authz };
    }

    /// <summary>The allow-list as <see cref="NbdServerOptions.Authorize"/>; null when every certificate the CA signed is served.</summary>
    public static Func<NbdClientIdentity, bool>? Authorize(IReadOnlyList<string> authz) =>
        authz.Count == 0 ? null : identity => authz.Any(identity.SubjectIs);

    private static NbdTlsMode ParseMode(string? mode, bool haveCredentials) => mode switch
    {
        null => haveCredentials ? NbdTlsMode.Required : NbdTlsMode.Off,
        "off" => NbdTlsMode.Off,
        "optional" => NbdTlsMode.Optional,
        "required" => NbdTlsMode.Required,
        _ => throw new ArgumentException($"--tls '{mode}' is not off, optional or required"),
    };

    private static bool IsDistinguishedName(string subject)
    {
        if (!subject.Contains('=')) return false;
        try
        {
            _ = new System.Security.Cryptography.X509Certificates.X500DistinguishedName(subject);
            return true;
        }
        catch (System.Security.Cryptography.CryptographicException)
        {
            return false;
        }
    }
}
