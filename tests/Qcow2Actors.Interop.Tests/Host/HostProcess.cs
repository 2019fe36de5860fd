using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// <c>q2a host</c> running out of process on a temporary data directory, control socket and NBD port,
/// driven only through <c>q2a ctl</c> (out of process too) and stopped with a real signal.
/// </summary>
internal sealed class HostProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private HostProcess(string dataDir, string controlSocket, int nbdPort, IEnumerable<string> extraArgs)
    {
        DataDir = dataDir;
        ControlSocket = controlSocket;
        NbdPort = nbdPort;
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "q2a.dll"));
        foreach (var a in (string[])["host", "--data-dir", dataDir, "--control", controlSocket, "--port", nbdPort.ToString(CultureInfo.InvariantCulture)])
            psi.ArgumentList.Add(a);
        foreach (var a in extraArgs) psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>The host's data directory (DIR/TENANT/NAME.qcow2).</summary>
    public string DataDir { get; }

    /// <summary>The control API's Unix socket.</summary>
    public string ControlSocket { get; }

    /// <summary>The NBD TCP port on 127.0.0.1.</summary>
    public int NbdPort { get; }

    /// <summary>The host's process id.</summary>
    public int Pid => _process.Id;

    /// <summary>What the host printed on stdout and stderr so far.</summary>
    public string Output { get { lock (_output) return _output.ToString(); } }

    /// <summary>
    /// Starts <c>q2a host</c> in <paramref name="root"/> (data under root/data, the socket root/control.sock, a free
    /// NBD port) and returns once its control socket answers <c>q2a ctl health</c>.
    /// </summary>
    public static async Task<HostProcess> StartAsync(string root, params string[] extraArgs)
    {
        var data = Directory.CreateDirectory(Path.Combine(root, "data")).FullName;
        var socket = Path.Combine(root, "control.sock");
        var host = new HostProcess(data, socket, FreePort(), extraArgs);
        try
        {
            await host.WaitForSocketAsync(TimeSpan.FromSeconds(60));
            var health = host.Ctl("health");
            if (health.ExitCode != 0) throw new InvalidOperationException($"q2a ctl health: exit {health.ExitCode} {health.StdErr}");
            return host;
        }
        catch
        {
            host.Dispose();
            throw;
        }
    }

    // The host creates its socket once it listens: wait for that event (or for the host to exit).
    private async Task WaitForSocketAsync(TimeSpan timeout)
    {
        var appeared = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var watcher = new FileSystemWatcher(Path.GetDirectoryName(ControlSocket)!, Path.GetFileName(ControlSocket));
        watcher.Created += (_, _) => appeared.TrySetResult();
        watcher.EnableRaisingEvents = true;
        _process.Exited += (_, _) => appeared.TrySetResult();
        if (File.Exists(ControlSocket) || _process.HasExited) appeared.TrySetResult();
        try
        {
            await appeared.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"q2a host made no control socket in {timeout.TotalSeconds} s:\n{Output}");
        }
        if (_process.HasExited)
        {
            _process.WaitForExit();
            throw new InvalidOperationException($"q2a host exited {_process.ExitCode} at start-up:\n{Output}");
        }
    }

    /// <summary>A TCP port nobody listens on now (the kernel's pick).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Runs <c>q2a ctl --control SOCKET ARGS</c> out of process.</summary>
    public QemuTools.Result Ctl(params string[] args) => QemuTools.Q2a(["ctl", "--control", ControlSocket, .. args]);

    /// <summary>Runs <c>q2a ctl --output json ARGS</c>, requires exit 0 and returns the reply's JSON.</summary>
    public JsonElement CtlJson(params string[] args)
    {
        var r = Ctl(["--output", "json", .. args]);
        Assert.True(r.ExitCode == 0, $"q2a ctl {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StdErr}{r.StdOut}");
        using var doc = JsonDocument.Parse(r.StdOut);
        return doc.RootElement.Clone();
    }

    /// <summary>Runs <c>q2a ctl ARGS</c> and requires exit 0; returns its stdout.</summary>
    public string CtlOk(params string[] args)
    {
        var r = Ctl(args);
        Assert.True(r.ExitCode == 0, $"q2a ctl {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StdErr}{r.StdOut}");
        return r.StdOut;
    }

    /// <summary>The image file of TENANT/NAME.</summary>
    public string ImagePath(string tenant, string name) => Path.Combine(DataDir, tenant, name + ".qcow2");

    /// <summary>The NBD URI of an export (the same one <c>export add</c> reports).</summary>
    public string Uri(string export) => string.Create(CultureInfo.InvariantCulture, $"nbd://127.0.0.1:{NbdPort}/{export}");

    /// <summary>Sends SIG<paramref name="signal"/> and waits for the exit code.</summary>
    public int Stop(string signal = "TERM", int timeoutSeconds = 60) =>
        ChildProcess.Stop(_process, "q2a host", signal, timeoutSeconds, () => "\n" + Output);

    public void Dispose() => ChildProcess.KillAndDispose(_process);
}
