using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// A stop signal the parent set to "ignore" (nohup, a background job of a script) is inherited and
/// stays ignored in .NET: <c>q2a serve</c> says so at start instead of seeming to hang on Ctrl-C.
/// </summary>
public sealed class ServeSignalInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [ServeFact]
    public async Task Serve_started_with_sigint_ignored_warns_once_and_still_stops_clean_on_sigterm()
    {
        var img = _dir.File("ign.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, "16M").EnsureSuccess();
        // bash sets the disposition, then execs q2a in its place (same pid, so signals reach it).
        using (var server = await ServeProcess.StartUnderAsync(["bash", "-c", "trap '' INT; exec \"$@\"", "bash"], 1, "--port", "0", img))
        {
            QemuTools.QemuIo("-f", "raw", server.Uri, "-c", "write -P 0x5a 0 64k", "-c", "flush").EnsureSuccess();
            Assert.Equal(0, server.Stop("TERM"));
            var warning = Assert.Single(server.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith("q2a serve: warning: SIGINT was ignored when this process started", warning);
            Assert.Contains("stop it with SIGTERM", warning);
        }
        QemuTools.AssertCheckClean(img);
    }
}
