using System.CommandLine;
using Qcow2Actors.Cli;

var root = new RootCommand("q2a: qemu-img style tools and an NBD server on the Qcow2Actors qcow2 engine");
foreach (var verb in Verbs.All())
    root.Subcommands.Add(verb);
return await root.Parse(args).InvokeAsync().ConfigureAwait(false);
