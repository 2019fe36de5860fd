using System.Diagnostics;
using System.Globalization;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>Stopping a q2a process a test started (serve, host): by signal with a bound, or killed at the end.</summary>
internal static class ChildProcess
{
    /// <summary>Sends SIG<paramref name="signal"/> and waits for the exit code; <paramref name="describe"/> says what was seen if it does not exit.</summary>
    public static int Stop(Process process, string what, string signal, int timeoutSeconds, Func<string> describe)
    {
        QemuTools.Run("kill", "-" + signal, process.Id.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
        if (!process.WaitForExit(timeoutSeconds * 1000))
            throw new TimeoutException($"{what} did not exit {timeoutSeconds} s after SIG{signal}: {describe()}");
        process.WaitForExit(); // drains the output events
        return process.ExitCode;
    }

    /// <summary>Kills the process (and its children) if it still runs, then releases it.</summary>
    public static void KillAndDispose(Process process)
    {
        if (!process.HasExited)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            process.WaitForExit(10_000);
        }
        process.Dispose();
    }
}
