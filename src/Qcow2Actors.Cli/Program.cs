using Qcow2Actors.Cli;

var parse = Verbs.Root(args).Parse(args);
// One line for bad usage, checked before any verb runs: nothing is opened or created.
if (ParseErrors.Describe(parse, args) is { } error)
{
    await Console.Error.WriteLineAsync(error).ConfigureAwait(false);
    return 1;
}
return await parse.InvokeAsync().ConfigureAwait(false);
