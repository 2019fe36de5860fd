using System.Diagnostics;
using System.Globalization;
using System.Text;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a serve</c> running out of process, as a user starts it: waits for its "Serving URI"
/// lines, and stops it with a real signal.
/// </summary>
internal sealed class ServeProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly List<string> _uris = [];
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly int _expected;

    private ServeProcess(IEnumerable<string> args, int expectedExports, IReadOnlyList<string> launcher)
    {
        _expected = expectedExports;
        var dll = Path.Combine(AppContext.BaseDirectory, "q2a.dll");
        var psi = new ProcessStartInfo(launcher.Count > 0 ? launcher[0] : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // A launcher that execs its command (prlimit, env) keeps the pid, so signals still reach q2a.
        foreach (var a in launcher.Skip(1)) psi.ArgumentList.Add(a);
        if (launcher.Count > 0) psi.ArgumentList.Add("dotnet");
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add("serve");
        foreach (var a in args) psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_stdout)
            {
                _stdout.AppendLine(e.Data);
                if (e.Data.StartsWith("Serving ", StringComparison.Ordinal))
                {
                    _uris.Add(e.Data["Serving ".Length..]);
                    if (_uris.Count == _expected) _ready.TrySetResult();
                }
            }
        };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
        _process.Exited += (_, _) => _ready.TrySetResult();
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>Starts <c>q2a serve ARGS</c> and waits until it has printed one URI per expected export.</summary>
    public static Task<ServeProcess> StartAsync(int expectedExports, params string[] args) => StartUnderAsync([], expectedExports, args);

    /// <summary>Starts <c>LAUNCHER... dotnet q2a.dll serve ARGS</c> (e.g. under <c>prlimit</c>) and waits for its URIs.</summary>
    public static async Task<ServeProcess> StartUnderAsync(string[] launcher, int expectedExports, params string[] args)
    {
        var server = new ServeProcess(args, expectedExports, launcher);
        try
        {
            await server._ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
        }
        catch (TimeoutException)
        {
            server.Dispose();
            throw new TimeoutException($"q2a serve printed no URI in 60 s; stderr: {server.StdErr}");
        }
        if (server._uris.Count < expectedExports)
        {
            // Exited can fire before the last stderr lines arrive: wait for the streams to drain first.
            if (server._process.HasExited) server._process.WaitForExit();
            throw new InvalidOperationException($"q2a serve exited {server.ExitCodeOrNull} before serving: {server.StdErr}{server.StdOut}");
        }
        return server;
    }

    /// <summary>The URIs printed, in order.</summary>
    public IReadOnlyList<string> Uris { get { lock (_stdout) return [.. _uris]; } }

    public string Uri => Uris[0];

    public string StdOut { get { lock (_stdout) return _stdout.ToString(); } }

    public string StdErr { get { lock (_stderr) return _stderr.ToString(); } }

    public bool HasExited => _process.HasExited;

    /// <summary>The server's process id.</summary>
    public int Pid => _process.Id;

    private int? ExitCodeOrNull => _process.HasExited ? _process.ExitCode : null;

    /// <summary>Sends <paramref name="signal"/> (TERM, INT, ...) and waits for the exit code.</summary>
    public int Stop(string signal = "TERM", int timeoutSeconds = 60) =>
        ChildProcess.Stop(_process, "q2a serve", signal, timeoutSeconds, () => "stderr: " + StdErr);

    public void Dispose() => ChildProcess.KillAndDispose(_process);
}
