using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// One <c>q2a host --cluster</c> node out of process: its own remoting port, control socket and NBD port, the data
/// directory shared with the other nodes. Its log lines can be awaited (the events themselves, not a delay).
/// </summary>
internal sealed class ClusterNodeProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly List<(long At, string Line)> _timed = [];
    private readonly List<(Func<string, bool> Match, TaskCompletionSource<string> Seen)> _waiters = [];
    private readonly HttpClient _http;

    public ClusterNodeProcess(string root, string name, string dataDir, int remotingPort, IReadOnlyList<int> seedPorts, string connectionString)
    {
        Name = name;
        RemotingPort = remotingPort;
        NbdPort = HostProcess.FreePort();
        ControlSocket = Path.Combine(root, name + ".sock");
        var config = Path.Combine(root, name + ".conf");
        // Q2A_TEST_AKKA_DEBUG=1: Akka's debug log with sharding's verbose lines, to see where a fail-over's time goes.
        File.WriteAllText(config, $$"""
            qcow2actors.host.cluster {
              port = {{remotingPort.ToString(CultureInfo.InvariantCulture)}}
              seed-nodes = [{{string.Join(", ", seedPorts.Select(p => $"\"akka.tcp://q2a-host@127.0.0.1:{p.ToString(CultureInfo.InvariantCulture)}\""))}}]
              journal.connection-string = "{{connectionString}}"
            }
            """ + (Environment.GetEnvironmentVariable("Q2A_TEST_AKKA_DEBUG") is "1" ? "\nakka.loglevel = DEBUG\nakka.cluster.sharding.verbose-debug-logging = on\n" : ""));
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in (string[])[Path.Combine(AppContext.BaseDirectory, "q2a.dll"), "host", "--cluster", "--config", config,
                     "--data-dir", dataDir, "--control", ControlSocket, "--port", NbdPort.ToString(CultureInfo.InvariantCulture)])
            psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => OnLine(e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        _process.Exited += (_, _) =>
        {
            lock (_waiters)
                foreach (var w in _waiters) w.Seen.TrySetException(new InvalidOperationException($"{Name} exited:\n{Output}"));
        };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        _http = new HttpClient(new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(ControlSocket), ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        }) { BaseAddress = new Uri("http://localhost") };
    }

    public string Name { get; }
    public int RemotingPort { get; }
    public int NbdPort { get; }
    public string ControlSocket { get; }
    public string Address => $"akka.tcp://q2a-host@127.0.0.1:{RemotingPort.ToString(CultureInfo.InvariantCulture)}";
    public bool HasExited => _process.HasExited;
    public string Output { get { lock (_output) return _output.ToString(); } }

    public string Uri(string export) => string.Create(CultureInfo.InvariantCulture, $"nbd://127.0.0.1:{NbdPort}/{export}");

    private void OnLine(string? line)
    {
        if (line is null) return;
        // Lock order: waiters, then output (as Line), so a line is either seen by Line's look back or by its waiter.
        lock (_waiters)
        {
            lock (_output)
            {
                _output.AppendLine(line);
                _timed.Add((Stopwatch.GetTimestamp(), line));
            }
            foreach (var w in _waiters.Where(w => w.Match(line)).ToList())
            {
                w.Seen.TrySetResult(line);
                _waiters.Remove(w);
            }
        }
    }

    /// <summary>The lines received from <paramref name="since"/> (a <see cref="Stopwatch"/> timestamp) on, each with its time since then.</summary>
    public IReadOnlyList<(TimeSpan After, string Line)> LinesSince(long since)
    {
        lock (_output) return [.. _timed.Where(t => t.At >= since).Select(t => (Stopwatch.GetElapsedTime(since, t.At), t.Line))];
    }

    /// <summary>A task that completes with the first line printed so far or from now on that <paramref name="match"/> accepts.</summary>
    public Task<string> Line(Func<string, bool> match)
    {
        lock (_waiters)
        {
            string? earlier;
            lock (_output) earlier = _output.ToString().Split('\n').FirstOrDefault(match);
            if (earlier is not null) return Task.FromResult(earlier);
            return NextLine(match);
        }
    }

    /// <summary>A task that completes with the first line from now on that <paramref name="match"/> accepts.</summary>
    public Task<string> NextLine(Func<string, bool> match)
    {
        var seen = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waiters)
        {
            if (_process.HasExited) seen.TrySetException(new InvalidOperationException($"{Name} exited:\n{Output}"));
            else _waiters.Add((match, seen));
        }
        return seen.Task;
    }

    public async Task<ClusterReply> ClusterAsync() =>
        (await _http.GetFromJsonAsync<ClusterReply>(Routes.Cluster, HostJson.Options))!;

    public async Task ServeAsync(string tenant, string image)
    {
        using var reply = await _http.PostAsJsonAsync(Routes.ClusterImages, new ClusterImageRequest { Tenant = tenant, Image = image }, HostJson.Options);
        Assert.True(reply.IsSuccessStatusCode, $"{Name}: POST {Routes.ClusterImages}: {(int)reply.StatusCode} {await reply.Content.ReadAsStringAsync()}");
    }

    /// <summary>SIGKILL: the node dies with its images open (no checkpoint, nothing handed off).</summary>
    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    /// <summary>Sends SIG<paramref name="signal"/> and waits for the exit code.</summary>
    public int Stop(string signal = "TERM", int timeoutSeconds = 60) =>
        ChildProcess.Stop(_process, Name, signal, timeoutSeconds, () => "\n" + Output);

    /// <summary>Waits (at most <paramref name="timeout"/>) for the process to exit on its own and returns its exit code.</summary>
    public void Dispose()
    {
        _http.Dispose();
        ChildProcess.KillAndDispose(_process);
    }

    // ---- clusterops: pause/resume, exit, owner list and un-serve ----

    /// <summary>The node's process id.</summary>
    public int Pid => _process.Id;

    /// <summary>SIGSTOP: the process freezes with everything it holds (sockets, OFD locks); its peers stop hearing from it.</summary>
    public void Pause() => Qcow2Actors.Tests.Shared.QemuTools.Run("kill", "-STOP", Pid.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();

    /// <summary>SIGCONT: the frozen process runs on from where it stopped.</summary>
    public void Resume() => Qcow2Actors.Tests.Shared.QemuTools.Run("kill", "-CONT", Pid.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();

    /// <summary>Waits for the process to exit on its own; its exit code, or null if it still runs after <paramref name="timeout"/>.</summary>
    public async Task<int?> ExitedAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return _process.ExitCode;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>DELETE /v1/cluster/images/TENANT/IMAGE: the status code and body.</summary>
    public async Task<(int Status, string Body)> UnserveAsync(string tenant, string image)
    {
        using var reply = await _http.DeleteAsync(Routes.ClusterImagePath(tenant, image));
        return ((int)reply.StatusCode, await reply.Content.ReadAsStringAsync());
    }
}
