using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// What ctl proves itself with: a bearer token (<c>--token</c>, else <c>--token-file</c>, else <c>$Q2A_TOKEN</c>)
/// and, over TLS, the CA it trusts for the host (<c>--cacert</c>) and a client certificate (<c>--cert</c>/<c>--key</c>).
/// </summary>
internal sealed record ControlCredentials
{
    /// <summary>The environment variable holding a bearer token.</summary>
    public const string TokenVariable = "Q2A_TOKEN";

    public string? Token { get; init; }
    public X509Certificate2Collection? Authorities { get; init; }
    public X509Certificate2? ClientCertificate { get; init; }

    /// <summary>Reads the files the options name; a file that does not load is a usage error naming it.</summary>
    public static ControlCredentials From(string? token, string? tokenFile, string? caCert, string? cert, string? key)
    {
        if (token is not null && tokenFile is not null) throw new CtlUsageException("--token and --token-file name the same thing: give one of them");
        if (tokenFile is not null)
        {
            try
            {
                token = File.ReadAllText(tokenFile).Trim();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CtlUsageException($"--token-file: cannot read '{tokenFile}': {e.Message}", e);
            }
            if (token.Length == 0) throw new CtlUsageException($"--token-file: '{tokenFile}' is empty");
        }
        token ??= Environment.GetEnvironmentVariable(TokenVariable) is { Length: > 0 } fromEnvironment ? fromEnvironment.Trim() : null;
        if (token?.Any(char.IsControl) == true) throw new CtlUsageException("the bearer token holds control characters");
        if ((cert is null) != (key is null)) throw new CtlUsageException(cert is null ? "--key needs --cert" : "--cert needs --key");
        X509Certificate2Collection? authorities = null;
        if (caCert is not null)
        {
            authorities = [];
            try
            {
                authorities.ImportFromPemFile(caCert);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
            {
                throw new CtlUsageException($"--cacert: cannot load '{caCert}': {e.Message}", e);
            }
            if (authorities.Count == 0) throw new CtlUsageException($"--cacert: '{caCert}' holds no certificate");
        }
        X509Certificate2? client = null;
        if (cert is not null)
        {
            try
            {
                client = Qcow2Actors.Nbd.PemCertificates.LoadWithKey(cert, key!);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
            {
                throw new CtlUsageException($"--cert/--key: cannot load '{cert}' with '{key}': {e.Message.ReplaceLineEndings(" ")}", e);
            }
        }
        return new ControlCredentials { Token = token, Authorities = authorities, ClientCertificate = client };
    }

    /// <summary>True when the host's certificate chains to one of <see cref="Authorities"/> (and names the host).</summary>
    public bool Trusts(X509Certificate2 certificate)
    {
        using var chain = new X509Chain { ChainPolicy = ChainPolicy() };
        return chain.Build(certificate);
    }

    /// <summary>
    /// <see cref="Authorities"/> alone, revocation unchecked, and nothing fetched: a certificate's AIA URLs must not
    /// make us connect anywhere.
    /// </summary>
    public X509ChainPolicy ChainPolicy()
    {
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.AddRange(Authorities!);
        return policy;
    }
}
