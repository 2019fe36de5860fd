using System.Diagnostics;
using System.Text;

namespace Qcow2Actors.Chaos.Processes;

/// <summary>What a qemu tool run returned.</summary>
/// <param name="ExitCode">Its exit code.</param>
/// <param name="StandardOutput">Its stdout.</param>
/// <param name="StandardError">Its stderr.</param>
public sealed record ToolResult(int ExitCode, string StandardOutput, string StandardError)
{
    /// <summary>stdout and stderr on one line, for a verdict message.</summary>
    public string OneLine() => (StandardError + " " + StandardOutput).ReplaceLineEndings(" ").Trim();
}

/// <summary>Runs <c>qemu-img</c>, the oracle every recovered image is judged by.</summary>
public static class QemuImg
{
    /// <summary>The qemu-img on PATH (or the bare name, which then fails to start with a clear error).</summary>
    public static string Executable { get; } = Find("qemu-img") ?? "qemu-img";

    /// <summary>True when qemu-img is on PATH.</summary>
    public static bool IsAvailable => Find("qemu-img") is not null;

    /// <summary>Runs qemu-img with <paramref name="args"/> (no shell), at most <paramref name="timeout"/>.</summary>
    public static async Task<ToolResult> RunAsync(IEnumerable<string> args, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var psi = new ProcessStartInfo(Executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start qemu-img");
        var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout ?? TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"qemu-img {string.Join(' ', psi.ArgumentList)} did not finish in time");
        }
        return new ToolResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary><c>qemu-img check -f qcow2 IMG</c>: exit 0 clean, 1 could not check, 2 corruptions, 3 leaks only.</summary>
    public static Task<ToolResult> CheckAsync(string path, CancellationToken cancellationToken = default) =>
        RunAsync(["check", "-f", "qcow2", path], cancellationToken: cancellationToken);

    /// <summary>Reads the whole guest disk through QEMU (<c>qemu-img convert -O raw</c>) into memory.</summary>
    public static async Task<byte[]> ReadGuestAsync(string path, CancellationToken cancellationToken = default)
    {
        var raw = path + ".qemu-read.raw";
        try
        {
            var r = await RunAsync(["convert", "-f", "qcow2", "-O", "raw", path, raw], cancellationToken: cancellationToken).ConfigureAwait(false);
            if (r.ExitCode != 0) throw new IOException($"qemu-img convert failed (exit {r.ExitCode}): {r.OneLine()}");
            return await File.ReadAllBytesAsync(raw, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            File.Delete(raw);
        }
    }

    private static string? Find(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var path = Path.Combine(dir, tool);
            if (File.Exists(path)) return path;
        }
        return null;
    }
}
