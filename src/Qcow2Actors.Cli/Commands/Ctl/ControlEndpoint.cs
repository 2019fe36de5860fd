using System.Globalization;
using Qcow2Actors.Host;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// Where the host's control API listens: a Unix socket (the default, <see cref="ControlSocket.DefaultPath"/>)
/// or the TCP port, which the host serves over TLS only (<c>--control-url https://HOST:PORT</c>, <c>--control HOST:PORT</c>,
/// <c>--control-port N</c> for 127.0.0.1).
/// </summary>
internal sealed record ControlEndpoint
{
    /// <summary>The Unix socket path, or null for TCP.</summary>
    public string? SocketPath { get; private init; }

    /// <summary>The TCP host (a name or an address), or null for a Unix socket.</summary>
    public string? Host { get; private init; }

    /// <summary>The TCP port (0 for a Unix socket).</summary>
    public int Port { get; private init; }

    /// <summary>A Unix socket endpoint.</summary>
    public static ControlEndpoint Unix(string path) => new() { SocketPath = path };

    /// <summary>A TCP endpoint.</summary>
    public static ControlEndpoint Tcp(string host, int port) => new() { Host = host, Port = port };

    /// <summary>
    /// The endpoint the options name: <paramref name="controlPort"/> is TCP on 127.0.0.1;
    /// <paramref name="control"/> is TCP when it reads HOST:PORT (no '/', digits after the last ':'),
    /// else a socket path; neither is the default socket path.
    /// </summary>
    public static ControlEndpoint From(string? control, string? controlPort, string? controlUrl = null)
    {
        if (new[] { control, controlPort, controlUrl }.Count(o => o is not null) > 1)
            throw new CtlUsageException(controlUrl is null
                ? "--control and --control-port name the same thing: give one of them"
                : "--control, --control-port and --control-url name the same thing: give one of them");
        if (controlUrl is not null)
        {
            if (!Uri.TryCreate(controlUrl, UriKind.Absolute, out var url) || url.Scheme != Uri.UriSchemeHttps || url.AbsolutePath != "/" || url.Query.Length > 0)
                throw new CtlUsageException($"--control-url: '{controlUrl}' is not https://HOST:PORT (the control port is TLS only)");
            return Tcp(url.IdnHost, url.Port);
        }
        if (controlPort is not null) return Tcp("127.0.0.1", ParsePort(controlPort, "--control-port"));
        if (control is null) return Unix(ControlSocket.DefaultPath());
        if (control.Length == 0) throw new CtlUsageException("--control: empty path");
        int colon = control.LastIndexOf(':');
        if (colon > 0 && !control.Contains('/', StringComparison.Ordinal) && colon < control.Length - 1
            && control.AsSpan(colon + 1).ContainsAnyExceptInRange('0', '9') == false)
        {
            var host = control[..colon];
            if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1]; // [::1]:8080
            return Tcp(host, ParsePort(control[(colon + 1)..], "--control"));
        }
        return Unix(control);
    }

    private static int ParsePort(string text, string option)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
            throw new CtlUsageException($"{option}: '{text}' is not a TCP port (1..65535)");
        return port;
    }

    /// <summary>How messages name the endpoint: <c>control socket PATH</c> or <c>control port HOST:PORT</c>.</summary>
    public override string ToString() => SocketPath is not null
        ? $"control socket {SocketPath}"
        : string.Create(CultureInfo.InvariantCulture, $"control port {(Host!.Contains(':', StringComparison.Ordinal) ? $"[{Host}]" : Host)}:{Port}");
}
