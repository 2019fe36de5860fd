using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a serve</c> started as a user starts it (no <c>DOTNET_ReadyToRun</c> in its environment) replaces
/// itself once with a JIT-compiled runtime: the same pid, so whoever started it still holds and signals it.
/// The restarted server then warms its request path up on a throwaway image before it listens.
/// The rest of this suite sets the variable (interop.runsettings) and so starts serve without the restart.
/// </summary>
public sealed class ServeOptimizedRestartInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [ServeFact]
    public async Task Serve_restarts_in_place_without_precompiled_code_and_still_serves_and_stops_on_sigterm()
    {
        var img = _dir.File("jit.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, "16M").EnsureSuccess();
        // A temporary directory of its own: where the warm-up's throwaway image and the diagnostics socket go.
        var tmp = Directory.CreateDirectory(_dir.File("tmp")).FullName;
        // env removes both spellings of the switch and execs dotnet in its place (same pid).
        using (var server = await ServeProcess.StartUnderAsync(
            ["env", "-u", "DOTNET_ReadyToRun", "-u", "COMPlus_ReadyToRun", "-u", "DOTNET_TieredCompilation", "-u", "COMPlus_TieredCompilation",
                "TMPDIR=" + tmp], 1, "--port", "0", img))
        {
            // /proc/PID/environ is what the running image was exec'd with: env gave it no switch, so a 0 there
            // was put by q2a's own exec.
            var environment = File.ReadAllText($"/proc/{server.Pid}/environ").Split('\0');
            Assert.Contains("DOTNET_ReadyToRun=0", environment);
            Assert.Contains("DOTNET_TieredCompilation=0", environment);
            // Named after the program it runs (ps, pgrep), not after /proc/self/exe.
            Assert.Equal("dotnet", File.ReadAllText($"/proc/{server.Pid}/comm").Trim());
            // The restarted runtime bound its own diagnostics socket (same pid and start time, so the same name as
            // the first one's): dotnet-counters and dotnet-trace can attach.
            var diagnostics = Directory.GetFiles(tmp, $"dotnet-diagnostic-{server.Pid}-*-socket");
            var bound = File.ReadAllText("/proc/net/unix");
            Assert.Contains(diagnostics, d => bound.Contains(d, StringComparison.Ordinal));
            // The restarted server warmed up before it listened (its image read back, or stderr would say it was
            // skipped) and removed its throwaway directory.
            Assert.Empty(Directory.GetDirectories(tmp, $"q2a-warm-up-{server.Pid}-*"));

            QemuTools.QemuIo("-f", "raw", server.Uri, "-c", "write -P 0x5a 4k 64k", "-c", "flush").EnsureSuccess();
            QemuTools.QemuIo("-f", "raw", "-r", server.Uri, "-c", "read -P 0x5a 4k 64k", "-c", "read -P 0 0 4k").EnsureSuccess();
            // The restarted runtime got an empty signal mask: SIGTERM still stops it cleanly.
            Assert.Equal(0, server.Stop("TERM"));
            Assert.Equal("", server.StdErr);
        }
        QemuTools.AssertCheckClean(img);
        QemuTools.QemuIo("-f", "qcow2", "-r", img, "-c", "read -P 0x5a 4k 64k").EnsureSuccess();
    }

    [ServeFact]
    public async Task A_warm_up_that_cannot_run_is_one_stderr_line_and_the_restarted_server_serves_all_the_same()
    {
        var img = _dir.File("nowarm.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, "16M").EnsureSuccess();
        // A temporary directory that does not exist: the warm-up cannot make its throwaway image. That it says so
        // also shows that the restarted server does run a warm-up (the test above sees only that it left nothing).
        var missing = _dir.File("no-such-dir");
        using (var server = await ServeProcess.StartUnderAsync(
            ["env", "-u", "DOTNET_ReadyToRun", "-u", "COMPlus_ReadyToRun", "TMPDIR=" + missing], 1, "--port", "0", img))
        {
            QemuTools.QemuIo("-f", "raw", server.Uri, "-c", "write -P 0x6b 0 64k", "-c", "flush").EnsureSuccess();
            QemuTools.QemuIo("-f", "raw", "-r", server.Uri, "-c", "read -P 0x6b 0 64k").EnsureSuccess();
            Assert.Equal(0, server.Stop("TERM"));
            var line = Assert.Single(server.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith("q2a serve: start-up warm-up skipped: ", line, StringComparison.Ordinal);
        }
        QemuTools.AssertCheckClean(img);
    }
}
