using System.Globalization;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// Turns flat block options (<c>--image-opts</c>, or a flattened <c>json:</c>) into an
/// <see cref="ImageSpec"/>, as QEMU's drivers read them: a format node (<c>driver=qcow2|raw</c>, or
/// none to probe) over a protocol node in <c>file.*</c> (<c>file</c> with <c>filename</c>, or
/// <c>nbd</c> with <c>server.*</c>, <c>export</c>, <c>tls-creds</c>), or a protocol node on top.
/// An unknown driver or key is one line naming it, worded as qemu-img words it.
/// </summary>
internal static class BlockOptions
{
    private const string FilePrefix = "file.";
    private static readonly string[] FormatKeys = ["driver", "read-only", "force-share", "node-name"];
    private static readonly string[] NbdKeys = ["driver", "export", "tls-creds", "tls-hostname", "host", "port", "path", "type"];

    /// <summary>The spec the options of <paramref name="argument"/> describe; <paramref name="format"/> is -f (json: only).</summary>
    public static ImageSpec Resolve(string argument, List<KeyValuePair<string, string>> pairs, string? format, SourceObjects objects)
    {
        var top = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in pairs) top[k] = v;
        string? driver = top.GetValueOrDefault("driver") ?? format;
        switch (driver)
        {
            case "nbd" or "file":
                return Protocol(argument, driver, top, objects) with { FormatLabel = driver == "nbd" ? "nbd" : "raw", Format = "raw" };
            case null or "qcow2" or "raw":
                break;
            default:
                throw new SourceException($"Unknown driver '{driver}'");
        }
        if (top.TryGetValue("file", out var reference))
            throw new SourceException($"Cannot find device='{reference}' nor node-name='{reference}'");
        var file = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in top)
        {
            if (k.StartsWith(FilePrefix, StringComparison.Ordinal)) file[k[FilePrefix.Length..]] = v;
            else if (!FormatKeys.Contains(k)) throw new SourceException($"Block format '{driver ?? "raw"}' does not support the option '{k}'");
        }
        if (file.Count == 0) throw new SourceException("A block device must be specified for \"file\"");
        string protocol = file.GetValueOrDefault("driver") ?? "file";
        return Protocol(argument, protocol, file, objects) with { Format = driver };
    }

    private static ImageSpec Protocol(string argument, string driver, Dictionary<string, string> o, SourceObjects objects)
    {
        switch (driver)
        {
            case "file":
                foreach (var k in o.Keys)
                    if (k is not ("driver" or "filename")) throw new SourceException($"Block protocol 'file' doesn't support the option '{k}'");
                if (!o.TryGetValue("filename", out var path)) throw new SourceException("The 'file' block driver requires a file name");
                return new ImageSpec { Argument = argument, DisplayName = path, Path = path };
            case "nbd":
                var target = Nbd(o, objects, out var tlsDir);
                return new ImageSpec { Argument = argument, DisplayName = target.DisplayName, Nbd = target, TlsDirectory = tlsDir };
            default:
                throw new SourceException($"Unknown driver '{driver}'");
        }
    }

    private static NbdTarget Nbd(Dictionary<string, string> o, SourceObjects objects, out string? tlsDir)
    {
        var server = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in o)
        {
            if (k.StartsWith("server.", StringComparison.Ordinal)) server[k["server.".Length..]] = v;
            else if (!NbdKeys.Contains(k)) throw new SourceException($"Block protocol 'nbd' doesn't support the option '{k}'");
        }
        // The legacy flat spelling: host=, port= or path= at the top.
        if (server.Count == 0)
        {
            if (o.TryGetValue("path", out var p)) server = new() { ["type"] = "unix", ["path"] = p };
            else if (o.TryGetValue("host", out var h)) server = new() { ["type"] = "inet", ["host"] = h, ["port"] = o.GetValueOrDefault("port") ?? "10809" };
            else throw new SourceException("NBD server address missing");
        }
        if (!server.Remove("type", out var type)) throw new SourceException("Parameter 'type' is missing");
        NbdTarget target;
        switch (type)
        {
            case "inet":
                if (!server.Remove("host", out var host)) throw new SourceException("Parameter 'host' is missing");
                if (!server.Remove("port", out var portText)) throw new SourceException("Parameter 'port' is missing");
                if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
                    throw new SourceException($"Parameter 'port' expects a port number from 0 to 65535, not '{portText}'");
                target = new NbdTarget { Host = host, Port = port };
                break;
            case "unix":
                if (!server.Remove("path", out var socket)) throw new SourceException("Parameter 'path' is missing");
                target = new NbdTarget { Socket = socket };
                break;
            default:
                throw new SourceException($"Parameter 'type' does not accept value '{type}'");
        }
        if (server.Count > 0) throw new SourceException($"Parameter '{server.Keys.First()}' is unexpected");
        tlsDir = null;
        string? creds = o.GetValueOrDefault("tls-creds");
        if (creds is not null) tlsDir = objects.TlsCreds(creds).Directory;
        return target with { Export = o.GetValueOrDefault("export") ?? "", TlsCredsId = creds, TlsHostname = o.GetValueOrDefault("tls-hostname") };
    }
}
