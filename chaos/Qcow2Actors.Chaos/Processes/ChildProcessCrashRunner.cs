using System.Diagnostics;
using System.Text;
using Qcow2Actors.Chaos.Workloads;

namespace Qcow2Actors.Chaos.Processes;

/// <summary>What to start and when to kill it.</summary>
public sealed record ChildProcessOptions
{
    /// <summary>The executable (for example <c>dotnet</c>, or <c>bash</c>).</summary>
    public required string FileName { get; init; }

    /// <summary>Arguments, passed without a shell.</summary>
    public IReadOnlyList<string> Arguments { get; init; } = [];

    /// <summary>Working directory; null inherits ours.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>Extra environment variables (null value removes one).</summary>
    public IReadOnlyDictionary<string, string?> Environment { get; init; } = new Dictionary<string, string?>();

    /// <summary>Earliest kill time after start.</summary>
    public TimeSpan KillAfterMin { get; init; } = TimeSpan.Zero;

    /// <summary>Latest kill time after start; the kill time is uniform in [min, max].</summary>
    public TimeSpan KillAfterMax { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Kill as soon as a complete stdout line satisfies this (for example the 5th FLUSHED), plus a
    /// random delay up to <see cref="KillJitter"/>; the timed kill still applies if it comes first.
    /// </summary>
    public Func<string, bool>? KillWhenLine { get; init; }

    /// <summary>Random extra delay after <see cref="KillWhenLine"/> matched, so kills land between, not only on, logged points.</summary>
    public TimeSpan KillJitter { get; init; }

    /// <summary>Give up (and kill) if the child neither exits nor gets killed by then.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(2);
}

/// <summary>What the child printed before it died.</summary>
/// <param name="Lines">Complete stdout lines, in order.</param>
/// <param name="PartialLine">Text after the last newline (a line the kill cut short), or null.</param>
/// <param name="StandardError">Everything written to stderr.</param>
/// <param name="Killed">True when we killed it; false when it exited on its own first.</param>
/// <param name="ExitCode">Its exit code (128 + 9 = 137 after SIGKILL on Linux).</param>
/// <param name="Elapsed">Time from start to exit.</param>
/// <param name="Log">The protocol lines among <paramref name="Lines"/>.</param>
public sealed record ChildRunResult(IReadOnlyList<string> Lines, string? PartialLine, string StandardError, bool Killed, int ExitCode, TimeSpan Elapsed, ChaosLog Log);

/// <summary>
/// Starts a workload process, lets it run, and SIGKILLs it (with its whole process tree) at a
/// random moment: the one crash a process cannot intercept or clean up after, which is what a
/// host crash looks like to the image files. Returns the child's output so the parent can rebuild
/// a <see cref="DiskModel"/> with <see cref="DiskModel.FromLog"/> and verify the image on disk.
/// </summary>
/// <remarks>
/// A process kill loses no written file data (the kernel keeps it); combine with a
/// <see cref="Devices.CrashSimulatingDevice"/> in-process to also lose unsynced writes.
/// </remarks>
public static class ChildProcessCrashRunner
{
    /// <summary>Runs the child and kills it at a time drawn from <paramref name="random"/>.</summary>
    public static async Task<ChildRunResult> RunAsync(ChildProcessOptions options, Random random, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(random);
        if (options.KillAfterMax < options.KillAfterMin) throw new ArgumentException("KillAfterMax is before KillAfterMin", nameof(options));
        var killAfter = options.KillAfterMin + (options.KillAfterMax - options.KillAfterMin) * random.NextDouble();
        var jitter = options.KillJitter * random.NextDouble();

        var psi = new ProcessStartInfo(options.FileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
            WorkingDirectory = options.WorkingDirectory ?? "",
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (var a in options.Arguments) psi.ArgumentList.Add(a);
        foreach (var (k, v) in options.Environment)
        {
            if (v is null) psi.Environment.Remove(k);
            else psi.Environment[k] = v;
        }

        var stopwatch = Stopwatch.StartNew();
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {options.FileName}");
        var killed = 0;
        void Kill()
        {
            if (process.HasExited || Interlocked.Exchange(ref killed, 1) != 0) return;
            // SIGKILL on Unix: no handler, no flush, no atexit. The tree goes too, so a wrapper
            // shell cannot leave the real workload running on.
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // It exited between the check and the kill: nothing left to kill.
            }
        }

        var lineMatched = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lines = new List<string>();
        // Without jitter the reader kills at once: a hop through the thread pool first would let
        // the child run on for several more ops on a busy machine.
        Action onMatch = jitter == TimeSpan.Zero ? Kill : () => lineMatched.TrySetResult();
        // A dedicated thread, not the pool: on a busy machine a starved pool reads the pipe late and
        // the line-triggered kill lands many ops after the line it was aimed at.
        var stdout = Task.Factory.StartNew(() => ReadLines(process.StandardOutput, lines, options.KillWhenLine, onMatch),
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var exited = process.WaitForExitAsync(cts.Token);
        var timer = Task.Delay(killAfter, cts.Token);
        var timeout = Task.Delay(options.Timeout, cts.Token);
        var triggered = lineMatched.Task.ContinueWith(_ => Task.Delay(jitter, cts.Token), cts.Token,
            TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default).Unwrap();

        var first = await Task.WhenAny(exited, timer, triggered, timeout);
        Kill();
        await cts.CancelAsync();
        await process.WaitForExitAsync(CancellationToken.None);
        var elapsed = stopwatch.Elapsed;
        var partial = await stdout;
        var errors = await stderr;
        if (first == timeout)
            throw new TimeoutException($"{options.FileName} neither exited nor was killed within {options.Timeout}; stderr: {errors}");
        cancellationToken.ThrowIfCancellationRequested();
        return new ChildRunResult(lines, partial, errors, killed != 0, process.ExitCode, elapsed, ChaosLog.Parse(lines));
    }

    /// <summary>
    /// Collects newline-terminated lines; returns the unterminated tail (null if none), which is
    /// never treated as a line because the kill may have cut it mid-number.
    /// </summary>
    private static string? ReadLines(StreamReader reader, List<string> lines, Func<string, bool>? trigger, Action matched)
    {
        var buffer = new char[4096];
        var pending = new StringBuilder();
        int n;
        while ((n = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            for (var i = 0; i < n; i++)
            {
                if (buffer[i] != '\n')
                {
                    pending.Append(buffer[i]);
                    continue;
                }
                var line = pending.ToString().TrimEnd('\r');
                pending.Clear();
                lock (lines) lines.Add(line);
                if (trigger is not null && trigger(line)) matched();
            }
        }
        return pending.Length == 0 ? null : pending.ToString();
    }
}
