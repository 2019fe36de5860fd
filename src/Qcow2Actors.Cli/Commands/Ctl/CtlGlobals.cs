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

    /// <summary>Every global option.</summary>
    public IEnumerable<Option> All => [Control, ControlPort, Output];

    /// <summary>
    /// Sets <paramref name="command"/>'s action: builds the client from the global options, runs
    /// <paramref name="body"/>, and turns failures into ctl's one line and exit code.
    /// </summary>
    public void SetAction(Command command, Func<ParseResult, CtlContext, Task<int>> body) =>
        command.SetAction((parse, ct) => CtlRunner.RunAsync(parse, this, body, ct));
}
