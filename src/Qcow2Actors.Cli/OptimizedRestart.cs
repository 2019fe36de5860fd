using System.Runtime.InteropServices;
using System.Text;

namespace Qcow2Actors.Cli;

/// <summary>
/// Restarts <c>serve</c> in place, once, with ReadyToRun code and tiered compilation off
/// (<c>DOTNET_ReadyToRun=0</c>, <c>DOTNET_TieredCompilation=0</c>): the same process (execve keeps the pid,
/// the open descriptors that are not close-on-exec, and ignored signals), running the same program with the
/// same argument and environment bytes plus those variables.
/// </summary>
/// <remarks>
/// Why: the short verbs want precompiled code with tiering (the csproj says why), a server wants neither.
/// Every request runs through the framework's precompiled async, collection and generic-dictionary code;
/// fully JIT-compiled, allocating 4 KiB writes took 26-29 us of server CPU instead of 32-37 (3 alternating
/// pairs, fresh servers) and peak RSS fell from 93-96 to 85-86 MiB (fewer pages of precompiled images
/// touched); without tiers each method is compiled optimized once, not quick-JIT first and again on the
/// background tier-up thread (27 % of a fresh serve's CPU samples in a 1 GiB seqwrite; 850-879 instead of
/// 1,211-1,328 us CPU per 1 MiB write, bench/results/seqwrite-profile-2026-12-01.md). The price is start-up:
/// ~1.9 s to the first NBD answer instead of ~0.75 s (bench/results/serve-jit-2026-12-01.md).
/// Both variables are read only when the runtime starts, and only from the environment (ReadyToRun has no
/// runtimeconfig knob, and the environment is what overrides q2a's runtimeconfig), hence the exec.
/// A <c>DOTNET_ReadyToRun</c> (or <c>COMPlus_ReadyToRun</c>) already in the environment is left to decide,
/// so <c>DOTNET_ReadyToRun=1 q2a serve ...</c> keeps the fast start; a tiered-compilation setting already
/// there is kept as it is.
/// </remarks>
internal static partial class OptimizedRestart
{
    /// <summary>The runtime's switch for precompiled code.</summary>
    public const string Variable = "DOTNET_ReadyToRun";

    /// <summary>What <see cref="Restart"/> did, when it returns at all.</summary>
    public enum Outcome
    {
        /// <summary>No restart was wanted or possible: go on serving in this process.</summary>
        Continue,

        /// <summary>SIGTERM, SIGINT or SIGHUP arrived while deciding: nothing was started, so exit.</summary>
        StopRequested,
    }

    /// <summary>The runtime's switch for tiered compilation, which the restart also turns off.</summary>
    public const string TieringVariable = "DOTNET_TieredCompilation";

    private const string LegacyVariable = "COMPlus_ReadyToRun";
    private const string LegacyTieringVariable = "COMPlus_TieredCompilation";
    private const int SigSetMask = 2;
    // glibc's sigset_t: 1024 bits.
    private const int SigSetBytes = 128;

    /// <summary>
    /// True when the process should restart itself: on Linux, with neither variable set. Split from
    /// <see cref="Restart"/> so the decision is testable without replacing the test process.
    /// </summary>
    public static bool Wanted(Func<string, string?> environment) => OperatingSystem.IsLinux() && Setting(environment) is null;

    /// <summary>
    /// The precompiled-code switch as the runtime reads it: <see cref="Variable"/>, or its older spelling
    /// (<c>COMPlus_ReadyToRun</c>) when that is unset; null when neither is set.
    /// </summary>
    public static string? Setting(Func<string, string?> environment) => environment(Variable) ?? environment(LegacyVariable);

    /// <summary>
    /// The variables the restart adds: <see cref="Variable"/>=0, and <see cref="TieringVariable"/>=0 unless
    /// tiered compilation is already set (either spelling), which the restarted runtime then obeys.
    /// </summary>
    public static IReadOnlyList<string> Additions(Func<string, string?> environment) =>
        environment(TieringVariable) is null && environment(LegacyTieringVariable) is null
            ? [$"{Variable}=0", $"{TieringVariable}=0"]
            : [$"{Variable}=0"];

    /// <summary>
    /// The NUL-terminated strings of a /proc/PID/cmdline or /proc/PID/environ file, as bytes (not decoded:
    /// a name or value that is not UTF-8 must reach the new image unchanged), or null when the file is not
    /// whole (empty, or its last string has no NUL).
    /// </summary>
    public static IReadOnlyList<byte[]>? Strings(byte[] file)
    {
        if (file.Length == 0 || file[^1] != 0) return null;
        var result = new List<byte[]>();
        int start = 0;
        for (int i = 0; i < file.Length; i++)
        {
            if (file[i] != 0) continue;
            result.Add(file[start..i]);
            start = i + 1;
        }
        return result;
    }

    /// <summary>
    /// Replaces this process with the same program, arguments and environment plus <see cref="Additions"/>
    /// when <see cref="Wanted"/>; returns only if it does not (not wanted, the process files cannot be read,
    /// <paramref name="stopping"/> completed first, or the exec failed: then it says so on <paramref name="error"/>
    /// and the server runs on as it is).
    /// </summary>
    /// <param name="error">Where a failed exec is reported.</param>
    /// <param name="stopping">
    /// Completed by a stop signal (serve's own handlers, registered before this call): one that came while deciding
    /// would be wiped by the exec, so it is answered by not starting at all (one in the instant between the last
    /// check and the exec is still lost).
    /// </param>
    public static Outcome Restart(TextWriter error, Task stopping)
    {
        // Only q2a itself: a process that runs the verbs in-process (a test host) must never be replaced.
        if (!Wanted(Environment.GetEnvironmentVariable) || System.Reflection.Assembly.GetEntryAssembly()?.GetName().Name != "q2a")
            return Outcome.Continue;
        IReadOnlyList<byte[]>? argv, env;
        try
        {
            argv = Strings(File.ReadAllBytes("/proc/self/cmdline"));
            env = Strings(File.ReadAllBytes("/proc/self/environ"));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            argv = env = null;
        }
        if (argv is not { Count: > 0 } || env is null) return Outcome.Continue;

        var native = new List<IntPtr>();
        try
        {
            var argvPointers = Pointers(argv, native);
            var envPointers = Pointers([.. env, .. Additions(Environment.GetEnvironmentVariable).Select(Encoding.ASCII.GetBytes)], native);
            // The new runtime binds its diagnostics socket at $TMPDIR/dotnet-diagnostic-PID-STARTTIME-socket, the
            // name this one bound (exec keeps both), and does not replace an existing file: remove it, or tools
            // such as dotnet-counters could not attach to the server. This runtime's listening socket closes on exec.
            RemoveDiagnosticsSocket();
            // The runtime may have blocked signals on this thread; the new image would inherit the mask and
            // never see SIGTERM.
            Span<byte> empty = stackalloc byte[SigSetBytes];
            empty.Clear();
            _ = PthreadSigmask(SigSetMask, empty, IntPtr.Zero);
            if (stopping.IsCompleted) return Outcome.StopRequested;
            // The real path, not /proc/self/exe: the kernel names the process after the file it runs
            // (`dotnet` or `q2a` in ps and pgrep, not `exe`).
            Execve(Environment.ProcessPath ?? "/proc/self/exe", argvPointers, envPointers);
            // Only a failed exec gets here.
            int errno = Marshal.GetLastPInvokeError();
            error.WriteLine($"q2a serve: note: could not restart on JIT-compiled code (execve {Environment.ProcessPath}: {Marshal.GetPInvokeErrorMessage(errno)}); serving on precompiled code");
            return stopping.IsCompleted ? Outcome.StopRequested : Outcome.Continue;
        }
        finally
        {
            foreach (var p in native) Marshal.FreeHGlobal(p);
        }
    }

    private static void RemoveDiagnosticsSocket()
    {
        try
        {
            foreach (var socket in Directory.EnumerateFiles(Path.GetTempPath(), $"dotnet-diagnostic-{Environment.ProcessId}-*-socket"))
                File.Delete(socket);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Not ours to remove, or gone: the restarted server then runs without a diagnostics port, nothing worse.
        }
    }

    /// <summary>A NULL-terminated array of NUL-terminated copies of <paramref name="strings"/>, in native memory listed in <paramref name="owned"/>.</summary>
    private static IntPtr[] Pointers(IReadOnlyList<byte[]> strings, List<IntPtr> owned)
    {
        var result = new IntPtr[strings.Count + 1];
        for (int i = 0; i < strings.Count; i++)
        {
            var bytes = strings[i];
            var p = Marshal.AllocHGlobal(bytes.Length + 1);
            owned.Add(p);
            Marshal.Copy(bytes, 0, p, bytes.Length);
            Marshal.WriteByte(p, bytes.Length, 0);
            result[i] = p;
        }
        return result;
    }

    [LibraryImport("libc", EntryPoint = "execve", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Execve(string path, IntPtr[] argv, IntPtr[] envp);

    [LibraryImport("libc", EntryPoint = "pthread_sigmask")]
    private static partial int PthreadSigmask(int how, ReadOnlySpan<byte> set, IntPtr oldSet);
}
