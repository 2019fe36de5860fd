using System.Diagnostics;
using System.Text;

namespace Qcow2Actors.CrashLab.Check;

/// <summary>The user's checker command: placeholders and one run of it through /bin/sh.</summary>
internal static class CheckerCommand
{
    public const string Image = "{image}";
    public const string Uri = "{uri}";
    public const string Raw = "{raw}";

    public static bool Uses(string command, string placeholder) => command.Contains(placeholder, StringComparison.Ordinal);

    /// <summary>Substitutes shell-quoted values for the placeholders.</summary>
    public static string Expand(string command, string? image, string? uri, string? raw) =>
        command.Replace(Image, Quote(image), StringComparison.Ordinal)
            .Replace(Uri, Quote(uri), StringComparison.Ordinal)
            .Replace(Raw, Quote(raw), StringComparison.Ordinal);

    private static string Quote(string? value) => value is null ? "''" : "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    /// <summary>Runs <paramref name="command"/>; returns its exit code (-1 on timeout) and the end of its output.</summary>
    public static async Task<(int ExitCode, string Output)> RunAsync(string command, string workDirectory, TimeSpan timeout,
        int maxOutput, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo("/bin/sh")
        {
            ArgumentList = { "-c", command },
            WorkingDirectory = workDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(start) ?? throw new CrashLabException("could not start /bin/sh for the checker.");
        process.StandardInput.Close();
        var output = new StringBuilder();
        var gate = new Lock();
        void Append(string? line)
        {
            if (line is null)
                return;
            lock (gate)
            {
                output.AppendLine(line);
                // Keep the end: that is where checkers say what is wrong.
                if (output.Length > maxOutput * 2)
                    output.Remove(0, output.Length - maxOutput);
            }
        }

        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        var exitCode = -1;
        try
        {
            await process.WaitForExitAsync(deadline.Token);
            exitCode = process.ExitCode;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None);
            Append($"(checker killed after {timeout.TotalSeconds:0} s)");
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        lock (gate)
        {
            var text = output.ToString().TrimEnd();
            return (exitCode, text.Length > maxOutput ? text[^maxOutput..] : text);
        }
    }
}
