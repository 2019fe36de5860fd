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
            // A backing file's message already names the chain as qemu-img does.
            FileNotFoundException f when message.Contains(": Could not open backing file: ", StringComparison.Ordinal) => message,
            // qemu-img names the file twice (the image, then the file protocol under it), as the user typed it.
            FileNotFoundException f when f.FileName is { } name => $"Could not open '{AsTyped(name)}': Could not open '{AsTyped(name)}': No such file or directory",
            _ => message,
        };
    }

    // .NET reports a missing file by its full path; qemu-img by the name on the command line.
    private static string AsTyped(string path)
    {
        if (!Path.IsPathRooted(path)) return path;
        foreach (var arg in Environment.GetCommandLineArgs().Skip(1))
        {
            string candidate = arg[(arg.LastIndexOf('=') + 1)..];
            if (candidate.Length == 0 || string.Equals(candidate, path, StringComparison.Ordinal)) continue;
            try
            {
                if (string.Equals(Path.GetFullPath(candidate), path, StringComparison.Ordinal)) return candidate;
            }
            catch (ArgumentException)
            {
                // not a path
            }
        }
        return path;
    }
}
