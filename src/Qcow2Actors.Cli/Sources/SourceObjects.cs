namespace Qcow2Actors.Cli.Sources;

/// <summary>An object made with <c>--object</c>: its type and id.</summary>
internal abstract record SourceObject(string Id);

/// <summary><c>--object secret,id=ID,data=...|file=...[,format=raw|base64]</c>: kept; used only if an option refers to it.</summary>
internal sealed record SecretObject(string Id, byte[] Value) : SourceObject(Id);

/// <summary><c>--object tls-creds-x509,id=ID,dir=DIR,endpoint=client[,verify-peer=on]</c>: certificates for an NBD client.</summary>
internal sealed record TlsCredsObject(string Id, string Directory, bool ClientEndpoint) : SourceObject(Id);

/// <summary>
/// Every <c>--object</c> of a command line, parsed and checked as qemu-img does before it opens
/// anything: unknown types, missing or unexpected parameters, duplicate ids, unreadable secret
/// files and credential directories without <c>ca-cert.pem</c> are each one line naming them.
/// </summary>
internal sealed class SourceObjects
{
    private readonly Dictionary<string, SourceObject> _byId = new(StringComparer.Ordinal);

    /// <summary>No objects.</summary>
    public static SourceObjects Empty { get; } = new();

    /// <summary>Parses every <c>--object</c> value in order.</summary>
    public static SourceObjects Parse(IEnumerable<string> values)
    {
        var objects = new SourceObjects();
        foreach (var value in values) objects.Add(ParseOne(value));
        return objects;
    }

    /// <summary>The object with id <paramref name="id"/>, or null.</summary>
    public SourceObject? Find(string id) => _byId.GetValueOrDefault(id);

    /// <summary>The TLS credentials <c>tls-creds=</c><paramref name="id"/> names, checked to be a client's.</summary>
    public TlsCredsObject TlsCreds(string id) => Find(id) switch
    {
        null => throw new SourceException($"No TLS credentials with id '{id}'"),
        TlsCredsObject { ClientEndpoint: false } => throw new SourceException("Expecting TLS credentials with a client endpoint"),
        TlsCredsObject tls => tls,
        _ => throw new SourceException($"Object with id '{id}' is not TLS credentials"),
    };

    private void Add(SourceObject o)
    {
        if (!_byId.TryAdd(o.Id, o))
            throw new SourceException($"attempt to add duplicate property '{o.Id}' to object (type 'container')", whole: true);
    }

    private static SourceObject ParseOne(string value)
    {
        var pairs = KeyValueOptions.Parse(value, implicitKey: "qom-type");
        var opts = pairs.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        if (!opts.Remove("qom-type", out var type)) throw Whole("Parameter 'qom-type' is missing");
        if (type is not ("secret" or "tls-creds-x509")) throw Whole($"Parameter 'qom-type' does not accept value '{type}'");
        if (!opts.Remove("id", out var id)) throw Whole("Parameter 'id' is missing");
        return type == "secret" ? Secret(id, opts) : TlsCreds(id, opts);
    }

    private static SecretObject Secret(string id, Dictionary<string, string> opts)
    {
        opts.Remove("data", out var data);
        opts.Remove("file", out var file);
        opts.Remove("format", out var format);
        Unexpected(opts);
        if (format is not (null or "raw" or "base64")) throw Whole($"Parameter 'format' does not accept value '{format}'");
        if (data is null && file is null) throw Whole("Either 'file' or 'data' must be provided");
        if (data is not null && file is not null) throw Whole("'data' and 'file' are mutually exclusive");
        byte[] raw;
        if (file is not null)
        {
            try
            {
                raw = File.ReadAllBytes(file);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                string why = ex is FileNotFoundException or DirectoryNotFoundException ? "No such file or directory" : ex.Message;
                throw new SourceException($"Unable to read {file}: Failed to open file \u201c{file}\u201d: {why}", whole: true);
            }
        }
        else
        {
            raw = System.Text.Encoding.UTF8.GetBytes(data!);
        }
        if (format == "base64")
        {
            try
            {
                raw = Convert.FromBase64String(System.Text.Encoding.ASCII.GetString(raw));
            }
            catch (FormatException)
            {
                throw Whole($"secret '{id}': the data is not valid base64");
            }
        }
        return new SecretObject(id, raw);
    }

    private static TlsCredsObject TlsCreds(string id, Dictionary<string, string> opts)
    {
        opts.Remove("dir", out var dir);
        opts.Remove("endpoint", out var endpoint);
        opts.Remove("verify-peer", out var verify);
        Unexpected(opts);
        endpoint ??= "client";
        if (endpoint is not ("client" or "server")) throw Whole($"Parameter 'endpoint' does not accept value '{endpoint}'");
        if (verify is not (null or "on" or "off" or "yes" or "no" or "true" or "false"))
            throw Whole("Parameter 'verify-peer' expects 'on' or 'off'");
        // qemu's client then skips checking the server's certificate; we always check it.
        if (verify is "off" or "no" or "false")
            throw Whole($"tls-creds-x509 '{id}': verify-peer=off is not supported (the server's certificate is always verified)");
        if (dir is null) throw Whole("Missing 'dir' property value");
        string ca = Path.Combine(dir, "ca-cert.pem");
        if (!File.Exists(ca)) throw Whole($"Unable to access credentials {ca}: No such file or directory");
        return new TlsCredsObject(id, dir, endpoint == "client");
    }

    private static void Unexpected(Dictionary<string, string> opts)
    {
        if (opts.Count > 0) throw Whole($"Parameter '{opts.Keys.First()}' is unexpected");
    }

    private static SourceException Whole(string message) => new(message, whole: true);
}
