using System.Diagnostics;
using System.Text;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Chain;

/// <summary>
/// A q2a process run with <c>Q2A_TEST_HOLD</c> and stopped at its hold (its "q2a: test hold"
/// line seen): whatever it holds open stays held until <see cref="Kill"/> SIGKILLs it.
/// </summary>
internal sealed class HeldQ2a : IDisposable
{
    private readonly Process _process;

    private HeldQ2a(Process process) => _process = process;

    /// <summary>Starts q2a with <paramref name="args"/> and waits (at most 120 s) for its hold.</summary>
    public static HeldQ2a Start(string hold, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "q2a.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["Q2A_TEST_HOLD"] = hold;
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stderr = new StringBuilder();
        var process = new Process { StartInfo = psi };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (stderr) stderr.AppendLine(e.Data);
            if (e.Data == "q2a: test hold") held.TrySetResult();
        };
        process.Exited += (_, _) => held.TrySetException(new InvalidOperationException("q2a exited before its hold"));
        process.EnableRaisingEvents = true;
        process.Start();
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        var result = new HeldQ2a(process);
        try
        {
            if (!held.Task.Wait(TimeSpan.FromSeconds(120))) throw new TimeoutException("no hold within 120 s");
            return result;
        }
        catch (Exception ex)
        {
            result.Dispose();
            string text;
            lock (stderr) text = stderr.ToString();
            throw new InvalidOperationException($"q2a {string.Join(' ', args)}: {text}", ex is AggregateException a ? a.InnerException : ex);
        }
    }

    /// <summary>SIGKILLs the process (as a crash would stop it) and waits for it to die.</summary>
    public void Kill()
    {
        if (_process.HasExited) return;
        QemuTools.Run("kill", "-KILL", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)).EnsureSuccess();
        Assert.True(_process.WaitForExit(30_000), "q2a did not die after SIGKILL");
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }
}
