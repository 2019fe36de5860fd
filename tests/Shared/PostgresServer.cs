using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Qcow2Actors.Tests.Shared;

/// <summary>
/// A throwaway PostgreSQL cluster for tests: <c>initdb</c> into a temp directory, then <c>postgres</c> itself on a free
/// 127.0.0.1 port (no Unix socket, trust authentication, user <c>postgres</c>), started as a child whose PID we hold
/// and stopped by that PID (SIGINT: PostgreSQL's fast shutdown; SIGKILL if it has not gone after 30 s).
/// </summary>
/// <remarks>
/// PostgreSQL refuses to run as root, so when the tests run as root (CI does) both programs run as <c>nobody</c>
/// (uid/gid 65534) through util-linux's <c>setpriv</c>, which execs in place: the PID we start is the postmaster's.
/// The binaries are Debian's (<c>apt-get install postgresql</c>: <c>/usr/lib/postgresql/VERSION/bin</c>, the newest
/// version found), or <c>$Q2A_PG_BIN</c>. fsync is off: the tests crash our processes, never the database's machine.
/// </remarks>
public sealed class PostgresServer : IDisposable
{
    private const int NobodyId = 65534;
    private readonly Process _process;
    private readonly string _dir;
    private readonly StringBuilder _log = new();

    private PostgresServer(Process process, string dir, int port)
    {
        _process = process;
        _dir = dir;
        Port = port;
    }

    /// <summary>The TCP port on 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>The postmaster's process id.</summary>
    public int Pid => _process.Id;

    /// <summary>An Npgsql connection string for the <c>postgres</c> database as superuser <c>postgres</c>.</summary>
    public string ConnectionString => $"Host=127.0.0.1;Port={Port};Username=postgres;Database=postgres;Pooling=true;Timeout=15";

    /// <summary>Where the binaries are, or null when PostgreSQL is not installed.</summary>
    public static string? BinDirectory()
    {
        var env = Environment.GetEnvironmentVariable("Q2A_PG_BIN");
        if (!string.IsNullOrEmpty(env)) return File.Exists(Path.Combine(env, "postgres")) ? env : null;
        const string debian = "/usr/lib/postgresql";
        if (!Directory.Exists(debian)) return null;
        return Directory.GetDirectories(debian)
            .Select(d => (Dir: Path.Combine(d, "bin"), Version: int.TryParse(Path.GetFileName(d), out int v) ? v : 0))
            .Where(d => File.Exists(Path.Combine(d.Dir, "postgres")) && File.Exists(Path.Combine(d.Dir, "initdb")))
            .OrderByDescending(d => d.Version)
            .Select(d => d.Dir)
            .FirstOrDefault();
    }

    /// <summary>Null when PostgreSQL is installed (or CI=true, where its absence must fail), else the skip reason.</summary>
    public static string? SkipReason() =>
        QemuTools.IsCi || BinDirectory() is not null ? null
            : "needs PostgreSQL (apt-get install postgresql, or Q2A_PG_BIN=DIR); set CI=true to make this a failure";

    /// <summary>Creates and starts a cluster; throws with initdb's or postgres's own words when it cannot.</summary>
    public static PostgresServer Start()
    {
        var bin = BinDirectory() ?? throw new InvalidOperationException(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/postgres (apt-get install postgresql, or set Q2A_PG_BIN)");
        var dir = Directory.CreateTempSubdirectory("q2a-pg-").FullName;
        try
        {
            bool root = Environment.UserName == "root" || geteuid() == 0;
            // initdb creates the data directory itself (mode 0700, owned by whoever runs it): the parent must let it.
            if (root && !OperatingSystem.IsWindows()) File.SetUnixFileMode(dir, (UnixFileMode)0b111_111_111);
            var data = Path.Combine(dir, "data");
            var init = Run(bin, "initdb", root, ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"]);
            if (init.ExitCode != 0) throw new InvalidOperationException($"initdb failed (exit {init.ExitCode}): {init.StdErr.Trim()}");
            // A free port can be taken between our probe and postgres's bind: a few tries.
            for (int attempt = 1; ; attempt++)
            {
                int port = FreePort();
                var server = Launch(bin, root, data, port, dir);
                if (server is not null) return server;
                if (attempt == 3) throw new InvalidOperationException($"postgres did not start on 127.0.0.1 in 3 tries: {File.ReadAllText(Path.Combine(dir, "last-start.log"))}");
            }
        }
        catch
        {
            TryDelete(dir);
            throw;
        }
    }

    private static PostgresServer? Launch(string bin, bool root, string data, int port, string dir)
    {
        var psi = StartInfo(bin, "postgres", root,
        [
            "-D", data, "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
        ]);
        psi.RedirectStandardError = true;
        psi.RedirectStandardOutput = true;
        var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start postgres");
        var server = new PostgresServer(process, dir, port);
        var ready = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) { ready.TrySetResult(false); return; }
            lock (server._log) server._log.AppendLine(e.Data);
            if (e.Data.Contains("database system is ready to accept connections", StringComparison.Ordinal)) ready.TrySetResult(true);
        };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        bool up;
        try { up = ready.Task.WaitAsync(TimeSpan.FromSeconds(60)).ConfigureAwait(false).GetAwaiter().GetResult(); }
        catch (TimeoutException) { up = false; }
        if (up) return server;
        File.WriteAllText(Path.Combine(dir, "last-start.log"), server.Log);
        server.StopProcess();
        return null;
    }

    /// <summary>What postgres has logged so far (for a failing test's message).</summary>
    public string Log { get { lock (_log) return _log.ToString(); } }

    private void StopProcess()
    {
        if (_process.HasExited) return;
        // SIGINT = fast shutdown: clients are disconnected, the cluster stops at once.
        _ = kill(_process.Id, 2);
        if (!_process.WaitForExit(30_000))
        {
            _process.Kill();
            _process.WaitForExit(10_000);
        }
    }

    /// <summary>Stops the server (by its PID) and removes its directory.</summary>
    public void Dispose()
    {
        StopProcess();
        _process.Dispose();
        TryDelete(_dir);
    }

    private static ProcessStartInfo StartInfo(string bin, string program, bool root, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(root ? "setpriv" : Path.Combine(bin, program)) { UseShellExecute = false };
        if (root)
        {
            foreach (var a in new[] { $"--reuid={NobodyId}", $"--regid={NobodyId}", "--clear-groups", "--", Path.Combine(bin, program) })
                psi.ArgumentList.Add(a);
        }
        foreach (var a in args) psi.ArgumentList.Add(a);
        // PostgreSQL's locale checks read these; C is always there.
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["LANG"] = "C";
        return psi;
    }

    private static QemuTools.Result Run(string bin, string program, bool root, IEnumerable<string> args)
    {
        var psi = StartInfo(bin, program, root, args);
        return QemuTools.Run(psi.FileName, psi.ArgumentList.ToArray(), timeoutSeconds: 120);
    }

    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    private static void TryDelete(string dir)
    {
        try { Directory.Delete(dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern uint geteuid();
}

/// <summary>A fact that needs PostgreSQL (and qemu-img): skips with the reason outside CI when either is missing.</summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute() { Skip = PostgresServer.SkipReason() ?? QemuTools.SkipReason("qemu-img", "qemu-io"); }
}

/// <summary>One PostgreSQL cluster for a test class (xUnit class fixture), started on first use, stopped by PID at the end.</summary>
public sealed class PostgresFixture : IDisposable
{
    private readonly Lazy<PostgresServer> _server = new(PostgresServer.Start);

    /// <summary>The running server (started now if it is not yet).</summary>
    public PostgresServer Server => _server.Value;

    public void Dispose()
    {
        if (_server.IsValueCreated) _server.Value.Dispose();
    }
}
