using System.Collections;
using System.Runtime.InteropServices;
using System.Text;

namespace Qcow2Actors.Cli;

/// <summary>
/// Restarts <c>serve</c> in place, once, with ReadyToRun code off (<c>DOTNET_ReadyToRun=0</c>): the same
/// process (execve keeps the PID, the open descriptors that are not close-on-exec, and ignored signals),
/// running the same command line.
/// </summary>
/// <remarks>
/// Why: q2a runs without tiered compilation (the csproj says why), so precompiled ReadyToRun code, the
/// framework's and ours, is never replaced by the JIT's optimized code. That suits the short verbs
/// (<c>info</c> starts in ~50 ms on it), not a server: every request runs through the framework's
/// precompiled async, collection and generic-dictionary code. Fully JIT-compiled, allocating 4 KiB writes
/// took 26-29 us of server CPU instead of 32-37 (3 alternating pairs, fresh servers) and peak RSS fell from
/// 93-96 to 85-86 MiB (fewer pages of precompiled images touched). The price is start-up: ~1.9 s to the
/// first NBD answer instead of ~0.75 s (bench/results/serve-jit-2026-12-01.md).
/// The variable is read only when the runtime starts, and only from the environment (it has no
/// runtimeconfig knob), hence the exec. A <c>DOTNET_ReadyToRun</c> (or <c>COMPlus_ReadyToRun</c>) already in
/// the environment is left to decide, so <c>DOTNET_ReadyToRun=1 q2a serve ...</c> keeps the fast start.
/// </remarks>
internal static partial class OptimizedRestart
{
    /// <summary>The runtime's switch for precompiled code.</summary>
    public const string Variable = "DOTNET_ReadyToRun";

    private const string LegacyVariable = "COMPlus_ReadyToRun";
    private const int SigSetMask = 2;
    // glibc's sigset_t: 1024 bits.
    private const int SigSetBytes = 128;

    /// <summary>
    /// True when the process should restart itself: on Linux, with neither variable set. Split from
    /// <see cref="Restart"/> so the decision is testable without replacing the test process.
    /// </summary>
    public static bool Wanted(Func<string, string?> environment) =>
        OperatingSystem.IsLinux() && environment(Variable) is null && environment(LegacyVariable) is null;

    /// <summary>
    /// The command line this process was started with (/proc/self/cmdline, NUL-separated), or null
    /// when it cannot be read.
    /// </summary>
    public static IReadOnlyList<string>? CommandLine(byte[] cmdline)
    {
        // Every argument ends in a NUL, so only the last one is dropped: an empty argument stays.
        if (cmdline.Length == 0 || cmdline[^1] != 0) return null;
        var args = Encoding.UTF8.GetString(cmdline, 0, cmdline.Length - 1).Split('\0');
        return args[0].Length == 0 ? null : args;
    }

    /// <summary>
    /// Replaces this process with the same command line and <see cref="Variable"/>=0 when
    /// <see cref="Wanted"/>; returns only if it does not (not wanted, or the exec failed: then it says so
    /// on <paramref name="error"/> and the server runs on as it is).
    /// </summary>
    public static void Restart(TextWriter error)
    {
        if (!Wanted(Environment.GetEnvironmentVariable)) return;
        IReadOnlyList<string>? argv;
        try
        {
            argv = CommandLine(File.ReadAllBytes("/proc/self/cmdline"));
        }
        catch (IOException) { argv = null; }
        catch (UnauthorizedAccessException) { argv = null; }
        if (argv is null) return;

        var env = new List<string>();
        foreach (DictionaryEntry e in Environment.GetEnvironmentVariables()) env.Add($"{e.Key}={e.Value}");
        env.Add($"{Variable}=0");

        var native = new List<IntPtr>();
        try
        {
            var argvPtrs = Pointers(argv, native);
            var envPtrs = Pointers(env, native);
            // The runtime may have blocked signals on this thread; the new image would inherit the mask and
            // never see SIGTERM. Nothing else runs between this and the exec.
            Span<byte> empty = stackalloc byte[SigSetBytes];
            empty.Clear();
            _ = PthreadSigmask(SigSetMask, empty, IntPtr.Zero);
            Execve("/proc/self/exe", argvPtrs, envPtrs);
            // Only a failed exec gets here.
            int errno = Marshal.GetLastPInvokeError();
            error.WriteLine($"q2a serve: note: could not restart with JIT-compiled code (execve /proc/self/exe: errno {errno}); serving on precompiled code");
        }
        finally
        {
            foreach (var p in native) Marshal.FreeCoTaskMem(p);
        }
    }

    private static IntPtr[] Pointers(IReadOnlyList<string> strings, List<IntPtr> owned)
    {
        var result = new IntPtr[strings.Count + 1];
        for (int i = 0; i < strings.Count; i++)
        {
            result[i] = Marshal.StringToCoTaskMemUTF8(strings[i]);
            owned.Add(result[i]);
        }
        return result; // NULL-terminated
    }

    [LibraryImport("libc", EntryPoint = "execve", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Execve(string path, IntPtr[] argv, IntPtr[] envp);

    [LibraryImport("libc", EntryPoint = "pthread_sigmask")]
    private static partial int PthreadSigmask(int how, ReadOnlySpan<byte> set, IntPtr oldSet);
}
