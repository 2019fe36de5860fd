using System.CommandLine;

namespace Qcow2Actors.Cli;

/// <summary>Every verb of q2a; each lives in Commands/ and is listed here once.</summary>
internal static class Verbs
{
    /// <summary>The q2a command line: every verb under one root.</summary>
    public static RootCommand Root()
    {
        var root = new RootCommand("q2a: qemu-img style tools and an NBD server on the Qcow2Actors qcow2 engine");
        foreach (var verb in All()) root.Subcommands.Add(verb);
        return root;
    }

    public static IEnumerable<Command> All()
    {
        yield return Commands.MapCommand.Create();
        yield return Commands.ConvertCommand.Create();
        yield return Commands.CompareCommand.Create();
        yield return Commands.InfoCommand.Create();
        yield return Commands.CheckCommand.Create();
        yield return Commands.ServeCommand.Create();
        yield return Commands.CreateCommand.Create();
        yield return Commands.IoCommand.Create();
        yield return Commands.ResizeCommand.Create();
        yield return Commands.RecoverCommand.Create();
        foreach (var chaos in Commands.ChaosCommand.Create()) yield return chaos;
        yield return Commands.SnapshotCommand.Create();
    }
}
