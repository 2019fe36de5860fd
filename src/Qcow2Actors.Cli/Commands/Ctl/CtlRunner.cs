using System.CommandLine;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// Runs one ctl command: every failure is one line on stderr (<c>q2a ctl: ...</c>), never a stack trace
/// (Q2A_DEBUG=1 adds it), with ctl's exit codes: 1 for the host's error replies, 2 for usage errors and
/// unreachable hosts, 1 for anything else (a reply the client does not understand).
/// </summary>
internal static class CtlRunner
{
    public static async Task<int> RunAsync(ParseResult parse, CtlGlobals globals, Func<ParseResult, CtlContext, Task<int>> body, CancellationToken ct)
    {
        var stderr = parse.InvocationConfiguration.Error;
        Exception failure;
        int exit;
        try
        {
            var json = parse.GetValue(globals.Output) switch
            {
                null or "human" => false,
                "json" => true,
                var other => throw new CtlUsageException($"--output must be 'human' or 'json', not '{other}'"),
            };
            var endpoint = ControlEndpoint.From(parse.GetValue(globals.Control), parse.GetValue(globals.ControlPort), parse.GetValue(globals.ControlUrl));
            var credentials = ControlCredentials.From(parse.GetValue(globals.Token), parse.GetValue(globals.TokenFile),
                parse.GetValue(globals.CaCert), parse.GetValue(globals.Cert), parse.GetValue(globals.Key));
            using var client = new ControlClient(endpoint, CtlCommand.RequestTimeout, credentials);
            return await body(parse, new CtlContext(client, json, parse.InvocationConfiguration.Output, ct)).ConfigureAwait(false);
        }
        catch (CtlHostException e)
        {
            await stderr.WriteLineAsync($"q2a ctl: {e.Message} ({e.Code})").ConfigureAwait(false);
            return 1;
        }
        catch (CtlUsageException e)
        {
            (failure, exit) = (e, CtlCommand.UsageExit);
        }
        catch (OperationCanceledException e) when (ct.IsCancellationRequested)
        {
            (failure, exit) = (new CtlUsageException("interrupted", e), 1);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            (failure, exit) = (e, 1);
        }
        await stderr.WriteLineAsync($"q2a ctl: {failure.Message.ReplaceLineEndings(" ")}").ConfigureAwait(false);
        if (Environment.GetEnvironmentVariable("Q2A_DEBUG") == "1") await stderr.WriteLineAsync(failure.ToString()).ConfigureAwait(false);
        return exit;
    }
}
