using Qcow2Actors.Cli;
using Qcow2Actors.Cli.Commands.Ctl;

// ctl has exit codes of its own (2 for usage errors), so it parses its command line itself.
if (args is ["ctl", ..]) return await CtlCommand.RunAsync(args, Console.Out, Console.Error).ConfigureAwait(false);
var parse = Verbs.Root(args).Parse(args);
// One line for bad usage, checked before any verb runs: nothing is opened or created.
if (ParseErrors.Describe(parse, args) is { } error)
{
    await Console.Error.WriteLineAsync(error).ConfigureAwait(false);
    return 1;
}
return await parse.InvokeAsync().ConfigureAwait(false);
