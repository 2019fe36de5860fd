using Qcow2Actors.Cli;
using Qcow2Actors.Cli.Commands.Ctl;

// Socket completions run on the socket engine's epoll thread instead of being queued to the thread pool:
// an NBD connection's reader loop then parses and dispatches requests where the data arrived, one thread
// wake-up per received batch instead of two (epoll thread, then a pool thread). Measured on `q2a serve`
// (bench/results/nbd-race-2026-12-01-rread-notes.md): random 4 KiB reads +10-20% IOPS and random writes
// +30% at ~20% less CPU per I/O. The reader loop never blocks on the disk for reads (page-cache hits are
// copied, misses are started on the io_uring), so the epoll thread is not held up by them. Read once, when
// the first socket is made, so it is set here before anything else; an explicit setting in the environment wins.
const string InlineSocketCompletions = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";
if (Environment.GetEnvironmentVariable(InlineSocketCompletions) is null) Environment.SetEnvironmentVariable(InlineSocketCompletions, "1");

// ctl has exit codes of its own (2 for usage errors), so it parses its command line itself.
if (args is ["ctl", ..]) return await CtlCommand.RunAsync(args, Console.Out, Console.Error).ConfigureAwait(false);
var parse = Verbs.Root(args).Parse(args);
// One line for bad usage, checked before any verb runs: nothing is opened or created.
if (ParseErrors.Describe(parse, args) is { } error)
{
    await Console.Error.WriteLineAsync(error).ConfigureAwait(false);
    return 1;
}
return await parse.InvokeAsync(Verbs.Invocation(args)).ConfigureAwait(false);
