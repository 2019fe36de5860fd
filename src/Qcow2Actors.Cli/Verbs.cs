using System.CommandLine;

namespace Qcow2Actors.Cli;

/// <summary>Every verb of q2a; each lives in Commands/ and is listed here once.</summary>
internal static class Verbs
{
    // Name -> factory, so a command line builds only the verb it names: building all thirteen
    // verbs' options cost about a fifth of `q2a info`'s start-up (bench/results/info-startup-2026-11-30.md).
    private static readonly (string Name, Func<IEnumerable<Command>> Create)[] Table =
    [
        ("map", () => [Commands.MapCommand.Create()]),
        ("convert", () => [Commands.ConvertCommand.Create()]),
        ("compare", () => [Commands.CompareCommand.Create()]),
        ("info", () => [Commands.InfoCommand.Create()]),
        ("check", () => [Commands.CheckCommand.Create()]),
        ("serve", () => [Commands.ServeCommand.Create()]),
        ("host", () => [Commands.HostCommand.Create()]),
        ("create", () => [Commands.CreateCommand.Create()]),
        ("io", () => [Commands.IoCommand.Create()]),
        ("resize", () => [Commands.ResizeCommand.Create()]),
        ("recover", () => [Commands.RecoverCommand.Create()]),
        ("chaos", () => [.. Commands.ChaosCommand.Create().Where(c => c.Name == "chaos")]),
        ("chaos-child", () => [.. Commands.ChaosCommand.Create().Where(c => c.Name == "chaos-child")]),
        ("snapshot", () => [Commands.SnapshotCommand.Create()]),
        ("bitmap", () => [Commands.BitmapCommand.Create()]),
        ("ctl", () => [Commands.Ctl.CtlCommand.Create()]),
        ("rebase", () => [Commands.RebaseCommand.Create()]),
        ("commit", () => [Commands.CommitCommand.Create()]),
        ("dd", () => [Commands.DdCommand.Create()]),
        ("bench", () => [Commands.BenchCommand.Create()]),
        ("measure", () => [Commands.MeasureCommand.Create()]),
        ("amend", () => [Commands.AmendCommand.Create()]),
        ("crash", () => [Commands.CrashCommand.Create()]),
    ];

    /// <summary>The q2a command line: every verb under one root.</summary>
    public static Command Root() => Root([]);

    /// <summary>
    /// The command line for <paramref name="args"/>. When the first argument names a verb and no
    /// argument asks for help or the version, the root is a plain command holding that verb alone:
    /// it parses the verb the same, and skips RootCommand's help and version options, whose
    /// descriptions load System.CommandLine's resources (a third of `q2a info`'s start-up,
    /// bench/results/info-startup-2026-11-30.md). Otherwise (help, a typo) a RootCommand with
    /// every verb, so help lists them all and an unknown verb is reported as one.
    /// </summary>
    public static Command Root(IReadOnlyList<string> args)
    {
        var only = args.Count > 0 && !args.Any(a => HelpTokens.Contains(a)) ? Factory(args[0]) : null;
        Command root = only is null
            ? new RootCommand("q2a: qemu-img style tools and an NBD server on the Qcow2Actors qcow2 engine")
            : new Command("q2a");
        foreach (var verb in only?.Invoke() ?? All()) root.Subcommands.Add(verb);
        return root;
    }

    /// <summary>
    /// How to invoke the verb <paramref name="args"/> name. <c>info</c> only reads and prints, and what it holds (read
    /// locks) ends with the process, so SIGINT and SIGTERM keep the runtime's default (exit) instead of
    /// System.CommandLine's cancellation, whose signal handlers start the runtime's signal thread: ~2 ms of its
    /// start-up (bench/results/info-startup-2026-12-03.md). Every other verb gets the cancellation token.
    /// </summary>
    public static InvocationConfiguration Invocation(IReadOnlyList<string> args) =>
        args.Count > 0 && args[0] == "info" ? new() { ProcessTerminationTimeout = null } : new();

    // A loop, not Array.Find: Find over this tuple type is a generic instance the JIT compiled on every run.
    private static Func<IEnumerable<Command>>? Factory(string name)
    {
        foreach (var (verb, create) in Table)
            if (verb == name) return create;
        return null;
    }

    // What RootCommand's help and version options answer to.
    private static readonly string[] HelpTokens = ["-h", "/h", "--help", "-?", "/?", "--version"];

    /// <summary>Every verb, in the order help lists them.</summary>
    public static IEnumerable<Command> All() => Table.SelectMany(v => v.Create());
}
