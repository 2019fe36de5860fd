using System.CommandLine;
using Qcow2Actors.Cli;

var root = new RootCommand("q2a: qemu-img style tools and an NBD server on the Qcow2Actors qcow2 engine");
foreach (var verb in Verbs.All())
    root.Subcommands.Add(verb);
var parse = root.Parse(args);
// One line for bad usage, checked before any verb runs: nothing is opened or created.
if (ParseErrors.Describe(parse, args) is { } error)
{
    await Console.Error.WriteLineAsync(error).ConfigureAwait(false);
    return 1;
}
return await parse.InvokeAsync().ConfigureAwait(false);
