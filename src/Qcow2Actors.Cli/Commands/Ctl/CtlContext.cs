namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>What one ctl command works with: the client, the output form and the stream it prints to.</summary>
internal sealed record CtlContext(ControlClient Client, bool Json, TextWriter Out, CancellationToken Cancellation)
{
    /// <summary>
    /// Sends the request and prints the reply: its JSON with <c>--output json</c>, else what
    /// <paramref name="human"/> makes of it. Returns exit code 0.
    /// </summary>
    public async Task<int> PrintAsync<T>(HttpMethod method, string path, object? body, Func<T, string> human)
    {
        var (reply, json) = await Client.SendAsync<T>(method, path, body, Cancellation).ConfigureAwait(false);
        await Out.WriteAsync(Json ? CtlJson.Pretty(json) : human(reply)).ConfigureAwait(false);
        return 0;
    }

    /// <summary>Sends a request whose reply has no body (204): prints nothing. Returns exit code 0.</summary>
    public async Task<int> SendAsync(HttpMethod method, string path, object? body = null)
    {
        var json = await Client.SendAsync(method, path, body, Cancellation).ConfigureAwait(false);
        if (Json) await Out.WriteAsync(CtlJson.Pretty(json)).ConfigureAwait(false);
        return 0;
    }
}
