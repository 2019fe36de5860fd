using System.CommandLine;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// <c>q2a ctl [--control PATH|HOST:PORT | --control-port N | --control-url https://HOST:PORT] [--token T | --token-file F]
/// [--cacert F] [--cert F --key F] [--output human|json] GROUP VERB ...</c>: the
/// command-line client of <c>q2a host</c>'s control API (HOST-API.md; docs/CLI.md lists every spelling).
/// Exit codes: 0 done; 1 the host answered with an error (<c>q2a ctl: MESSAGE (CODE)</c>); 2 a usage error
/// or a host that cannot be reached (one line naming the socket or port); <c>image check</c> 3 when the
/// image is not clean.
/// </summary>
internal static class CtlCommand
{
    /// <summary>A usage error or a host that cannot be reached.</summary>
    public const int UsageExit = 2;

    /// <summary>How long one request may take: a check or a snapshot of a large served image takes a while.</summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromMinutes(5);

    public static Command Create()
    {
        var globals = new CtlGlobals();
        var command = new Command("ctl", "control a running q2a host (tenants, images, exports, snapshots, limits)");
        foreach (var option in globals.All) command.Options.Add(option);
        command.Subcommands.Add(TenantCommands.Create(globals));
        command.Subcommands.Add(TokenCommands.Create(globals));
        command.Subcommands.Add(ImageCommands.Create(globals));
        command.Subcommands.Add(ExportCommands.Create(globals));
        command.Subcommands.Add(SnapshotCommands.Create(globals));
        command.Subcommands.Add(LimitCommands.Create(globals));
        command.Subcommands.Add(ClusterCommands.Create(globals));
        foreach (var c in HealthCommands.Create(globals)) command.Subcommands.Add(c);
        return command;
    }

    /// <summary>
    /// Parses and runs <c>q2a ctl ...</c> (<paramref name="args"/> starts with "ctl"), writing to the
    /// given streams: a command-line error is one line and exit 2, as ctl's exit codes say.
    /// </summary>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        var parse = Verbs.Root(args).Parse(args);
        if (ParseErrors.Describe(parse, args) is { } error)
        {
            await stderr.WriteLineAsync(error).ConfigureAwait(false);
            return UsageExit;
        }
        return await parse.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr }).ConfigureAwait(false);
    }
}
