using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// <c>qcow2actors.host.control</c>: who may use the control API. The Unix socket admits the uids of
/// <see cref="AllowedUids"/> (empty: the host's own uid and root); the TCP port is TLS only and admits a client
/// certificate of an operator or a bearer token; every change and every refusal goes to the audit log.
/// </summary>
internal sealed record ControlAuthSettings
{
    /// <summary>Uids the Unix socket admits; empty: the host's own uid and root.</summary>
    public IReadOnlyList<uint> AllowedUids { get; init; } = [];

    /// <summary>PEM certificate chain the TCP port presents; null: no TLS (and then no TCP port).</summary>
    public string? TlsCert { get; init; }

    /// <summary>PEM private key of <see cref="TlsCert"/>.</summary>
    public string? TlsKey { get; init; }

    /// <summary>PEM CA that signs operators' client certificates; null: client certificates are not accepted.</summary>
    public string? TlsCa { get; init; }

    /// <summary>Operators: by client certificate subject, by token, or both.</summary>
    public IReadOnlyList<OperatorConfig> Operators { get; init; } = [];

    /// <summary>The audit log (JSON lines, mode 0600).</summary>
    public required string AuditLog { get; init; }

    private const string Key = "qcow2actors.host.control";

    /// <summary>Reads the section; <paramref name="tcp"/>: the TCP port is on, so TLS must be configured.</summary>
    /// <exception cref="ArgumentException">A bad or missing value, named by its key, in one line.</exception>
    public static ControlAuthSettings Read(Akka.Configuration.Config config, string dataDir, bool tcp)
    {
        var control = config.HasPath(Key) ? config.GetConfig(Key) : null;
        var uids = new List<uint>();
        if (control?.HasPath("allowed-uids") == true)
        {
            foreach (var text in control.GetStringList("allowed-uids"))
            {
                if (!uint.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var uid))
                    throw new ArgumentException($"{Key}.allowed-uids: '{text}' is not a uid");
                uids.Add(uid);
            }
        }
        string? cert = File(control, "tls.cert"), key = File(control, "tls.key"), ca = File(control, "tls.ca");
        if (tcp && cert is null) throw new ArgumentException($"{Key}.tls.cert is not set: the control port serves TLS only (control.tls {{ cert, key, ca }})");
        if (tcp && key is null) throw new ArgumentException($"{Key}.tls.key is not set: the control port serves TLS only (control.tls {{ cert, key, ca }})");
        var operators = new List<OperatorConfig>();
        if (control?.HasPath("operators") == true && control.GetConfig("operators") is { IsEmpty: false } section)
        {
            foreach (var name in section.AsEnumerable().Select(e => e.Key.Split('.')[0]).Distinct(StringComparer.Ordinal))
            {
                try
                {
                    Names.Check(name, "operator");
                }
                catch (HostApiException ex)
                {
                    throw new ArgumentException($"{Key}.operators: {ex.Message}");
                }
                var o = section.GetConfig(name);
                var subject = NonEmpty(o.GetString("subject", null));
                var tokenFile = NonEmpty(o.GetString("token-file", null));
                if (subject is null && tokenFile is null)
                    throw new ArgumentException($"{Key}.operators.{name}: give subject, token-file or both");
                string? token = null;
                if (tokenFile is not null)
                {
                    try
                    {
                        token = System.IO.File.ReadAllText(tokenFile).Trim();
                    }
                    catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                    {
                        throw new ArgumentException($"{Key}.operators.{name}.token-file '{tokenFile}' cannot be read: {ex.Message}");
                    }
                    if (token.Length < 16) throw new ArgumentException($"{Key}.operators.{name}.token-file '{tokenFile}' holds a token shorter than 16 characters");
                }
                operators.Add(new OperatorConfig(name, subject is null ? null : CertificateSubject.Normalize(subject, $"{Key}.operators.{name}.subject"),
                    token is null ? null : TokenHash.Of(token)));
            }
        }
        var audit = NonEmpty(control?.GetString("audit-log", null)) ?? Path.Combine(dataDir, "audit.log");
        return new ControlAuthSettings
        {
            AllowedUids = uids,
            TlsCert = cert,
            TlsKey = key,
            TlsCa = ca,
            Operators = operators,
            AuditLog = Path.GetFullPath(audit),
        };
    }

    private static string? File(Akka.Configuration.Config? control, string path)
    {
        var value = NonEmpty(control?.GetString(path, null));
        if (value is not null && !System.IO.File.Exists(value)) throw new ArgumentException($"{Key}.{path}: no file '{value}'");
        return value is null ? null : Path.GetFullPath(value);
    }

    private static string? NonEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;
}

/// <summary>An operator (<c>control.operators.NAME</c>): a normalized certificate subject and/or a token's hash.</summary>
internal sealed record OperatorConfig(string Name, string? Subject, byte[]? TokenHash);
