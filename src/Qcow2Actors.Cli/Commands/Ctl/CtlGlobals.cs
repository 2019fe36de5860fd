using System.CommandLine;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>The options every <c>q2a ctl</c> command takes, before or after its group and verb.</summary>
internal sealed class CtlGlobals
{
    /// <summary><c>--control PATH|HOST:PORT</c>.</summary>
    public Option<string?> Control { get; } = new("--control")
    {
        Description = "the host's control socket (default: $Q2A_CONTROL, else the per-user default path), or HOST:PORT for TCP",
        Recursive = true,
    };

    /// <summary><c>--control-port N</c>: TCP on 127.0.0.1.</summary>
    public Option<string?> ControlPort { get; } = new("--control-port")
    {
        Description = "the host's control TCP port on 127.0.0.1 (instead of the socket)",
        Recursive = true,
    };

    /// <summary><c>--output human|json</c>.</summary>
    public Option<string?> Output { get; } = new("--output")
    {
        Description = "human (default) or json: the host's reply as JSON",
        Recursive = true,
    };

    /// <summary><c>--control-url https://HOST:PORT</c>: the TCP control port by URL.</summary>
    public Option<string?> ControlUrl { get; } = new("--control-url")
    {
        Description = "the host's control port as https://HOST:PORT (the TCP port is TLS only)",
        Recursive = true,
    };

    /// <summary><c>--token TOKEN</c>.</summary>
    public Option<string?> Token { get; } = new("--token")
    {
        Description = "bearer token to present (an operator's or a tenant's; default: --token-file, else $Q2A_TOKEN)",
        Recursive = true,
    };

    /// <summary><c>--token-file FILE</c>.</summary>
    public Option<string?> TokenFile { get; } = new("--token-file")
    {
        Description = "read the bearer token from FILE",
        Recursive = true,
    };

    /// <summary><c>--cacert FILE</c>.</summary>
    public Option<string?> CaCert { get; } = new("--cacert")
    {
        Description = "PEM CA certificate that signed the host's TLS certificate (default: the system's roots)",
        Recursive = true,
    };

    /// <summary><c>--cert FILE</c>.</summary>
    public Option<string?> Cert { get; } = new("--cert")
    {
        Description = "PEM client certificate to present over TLS (an operator's; with --key)",
        Recursive = true,
    };

    /// <summary><c>--key FILE</c>.</summary>
    public Option<string?> Key { get; } = new("--key")
    {
        Description = "PEM private key of --cert",
        Recursive = true,
    };

    /// <summary>Every global option.</summary>
    public IEnumerable<Option> All => [Control, ControlPort, ControlUrl, Output, Token, TokenFile, CaCert, Cert, Key];

    /// <summary>
    /// Sets <paramref name="command"/>'s action: builds the client from the global options, runs
    /// <paramref name="body"/>, and turns failures into ctl's one line and exit code.
    /// </summary>
    public void SetAction(Command command, Func<ParseResult, CtlContext, Task<int>> body) =>
        command.SetAction((parse, ct) => CtlRunner.RunAsync(parse, this, body, ct));
}
