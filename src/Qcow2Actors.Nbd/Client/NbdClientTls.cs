namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// TLS for an NBD client, laid out as QEMU's <c>tls-creds-x509,endpoint=client</c> reads it: the directory holds
/// ca-cert.pem (the only authority trusted for the server) and, when the server asks for a client certificate,
/// client-cert.pem with client-key.pem.
/// </summary>
public sealed record NbdClientTls
{
    /// <summary>The directory holding ca-cert.pem and optionally client-cert.pem and client-key.pem.</summary>
    public required string Directory { get; init; }

    /// <summary>The name the server's certificate must carry; null uses <see cref="NbdClientOptions.Host"/> (or "localhost" over a Unix socket).</summary>
    public string? Hostname { get; init; }
}
