namespace Qcow2Actors.Cli;

/// <summary>
/// Runs a verb body so that bad input ends as one line on stderr and exit code 1,
/// never a stack trace (set Q2A_DEBUG=1 to see the trace when debugging).
/// </summary>
internal static class CliRunner
{
    public static async Task<int> RunAsync(Func<Task<int>> body)
    {
        try
        {
            return await body().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            await Console.Error.WriteLineAsync($"q2a: {Describe(ex)}").ConfigureAwait(false);
            if (Environment.GetEnvironmentVariable("Q2A_DEBUG") == "1")
                await Console.Error.WriteLineAsync(ex.ToString()).ConfigureAwait(false);
            return 1;
        }
    }

    public static Task<int> Run(Func<int> body) => RunAsync(() => Task.FromResult(body()));

    private static string Describe(Exception ex)
    {
        while (ex is AggregateException { InnerException: { } inner }) ex = inner;
        var message = ex.Message.ReplaceLineEndings(" ");
        return ex switch
        {
            FileNotFoundException f => $"Could not open '{f.FileName}': No such file or directory",
            _ => message,
        };
    }
}
