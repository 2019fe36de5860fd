using System.Globalization;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// The NBD file names qemu 7.2 accepts: URIs <c>nbd://HOST[:PORT][/EXPORT]</c> (also spelled
/// <c>nbd+tcp://</c>) and <c>nbd+unix:///[EXPORT]?socket=PATH</c>, and the older
/// <c>nbd:HOST:PORT[:exportname=EXPORT]</c> and <c>nbd:unix:PATH[:exportname=EXPORT]</c>.
/// Other <c>nbd+TRANSPORT</c> or <c>nbds</c> schemes are unknown protocols, as in qemu.
/// </summary>
internal static class NbdUri
{
    /// <summary>True when <paramref name="name"/> is spelled as a protocol (SCHEME:...) rather than a host path.</summary>
    public static bool LooksLikeProtocol(string name, out string scheme)
    {
        scheme = "";
        int colon = name.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0) return false;
        int slash = name.IndexOf('/', StringComparison.Ordinal);
        if (slash >= 0 && slash < colon) return false;
        scheme = name[..colon];
        return scheme.All(c => char.IsAsciiLetterOrDigit(c) || c is '+' or '-' or '.');
    }

    /// <summary>
    /// The target <paramref name="name"/> names, or null when it is not an NBD name at all. A malformed
    /// NBD URI throws qemu's "No valid URL specified" (the caller prefixes "Could not open ...").
    /// </summary>
    public static NbdTarget? Parse(string name)
    {
        if (name.StartsWith("nbd:", StringComparison.Ordinal) && !name.StartsWith("nbd://", StringComparison.Ordinal))
            return ParseLegacy(name);
        int sep = name.IndexOf("://", StringComparison.Ordinal);
        if (sep < 0) return null;
        string scheme = name[..sep];
        bool unix = scheme == "nbd+unix";
        if (scheme is not ("nbd" or "nbd+tcp" or "nbd+unix")) return null;

        string rest = name[(sep + 3)..];
        string? query = null;
        int q = rest.IndexOf('?', StringComparison.Ordinal);
        if (q >= 0) (rest, query) = (rest[..q], rest[(q + 1)..]);
        int pathStart = rest.IndexOf('/', StringComparison.Ordinal);
        string authority = pathStart < 0 ? rest : rest[..pathStart];
        string path = pathStart < 0 ? "" : rest[pathStart..];
        string export = path.Length > 1 ? Uri.UnescapeDataString(path[1..]) : "";

        if (unix)
        {
            // nbd+unix: no host, exactly one query parameter socket=PATH.
            if (authority.Length != 0 || query is null || !query.StartsWith("socket=", StringComparison.Ordinal) || query.Contains('&', StringComparison.Ordinal))
                throw Invalid();
            string socket = Uri.UnescapeDataString(query["socket=".Length..]);
            if (socket.Length == 0) throw Invalid();
            return new NbdTarget { Socket = socket, Export = export };
        }
        if (query is not null || authority.Length == 0) throw Invalid();
        string host = authority;
        int port = NbdTarget.DefaultPort;
        int portColon = authority.StartsWith('[') ? authority.IndexOf("]:", StringComparison.Ordinal) + 1 : authority.LastIndexOf(':');
        if (portColon > 0)
        {
            host = authority[..portColon];
            if (!int.TryParse(authority[(portColon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out port) || port > 65535)
                throw Invalid();
        }
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1];
        if (host.Length == 0) throw Invalid();
        return new NbdTarget { Host = host, Port = port, Export = export };
    }

    // nbd:HOST:PORT[:exportname=E] or nbd:unix:PATH[:exportname=E]
    private static NbdTarget ParseLegacy(string name)
    {
        string rest = name["nbd:".Length..];
        string export = "";
        int ex = rest.IndexOf(":exportname=", StringComparison.Ordinal);
        if (ex >= 0) (rest, export) = (rest[..ex], rest[(ex + ":exportname=".Length)..]);
        if (rest.StartsWith("unix:", StringComparison.Ordinal))
        {
            string socket = rest["unix:".Length..];
            if (socket.Length == 0) throw Invalid();
            return new NbdTarget { Socket = socket, Export = export };
        }
        int colon = rest.LastIndexOf(':');
        if (colon <= 0) throw Invalid();
        if (!int.TryParse(rest[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
            throw Invalid();
        return new NbdTarget { Host = rest[..colon], Port = port, Export = export };
    }

    private static SourceException Invalid() => new("No valid URL specified");
}
