namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// Where and how <see cref="NbdClient.ConnectAsync"/> reaches an NBD export: a TCP host and port or a Unix
/// socket (exactly one), the export's name, TLS, and the metadata contexts to ask for.
/// </summary>
public sealed record NbdClientOptions
{
    /// <summary>The TCP host (a name or an address such as 127.0.0.1); null when <see cref="UnixSocket"/> is used.</summary>
    public string? Host { get; init; }

    /// <summary>The TCP port; 10809, the IANA port for NBD, unless told otherwise.</summary>
    public int Port { get; init; } = 10809;

    /// <summary>The path of a Unix socket to connect to; null when <see cref="Host"/> is used.</summary>
    public string? UnixSocket { get; init; }

    /// <summary>The export to open; "" is the server's default export.</summary>
    public string ExportName { get; init; } = "";

    /// <summary>TLS settings (NBD_OPT_STARTTLS before anything else); null for a plain-text connection.</summary>
    public NbdClientTls? Tls { get; init; }

    /// <summary>
    /// The metadata contexts to ask for with NBD_OPT_SET_META_CONTEXT (only when the server agrees to structured
    /// replies); <see cref="NbdClient.MetaContexts"/> says which the server agreed to. Empty asks for none.
    /// </summary>
    public IReadOnlyList<string> MetaContexts { get; init; } = ["base:allocation"];

    /// <summary>True to refuse every write locally, even when the export is writable.</summary>
    public bool ReadOnly { get; init; }

    /// <summary>"127.0.0.1:10809" or "unix:/path": how error messages name the server.</summary>
    internal string Endpoint => UnixSocket is not null ? "unix:" + UnixSocket : FormattableString.Invariant($"{Host}:{Port}");
}
