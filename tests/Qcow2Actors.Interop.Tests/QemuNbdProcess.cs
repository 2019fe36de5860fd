using System.Globalization;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>qemu-nbd</c> holding an image read-write on a Unix socket, as a user runs it: started with
/// <c>--fork</c> (which returns once the image is open, locks taken and the socket listening) and
/// <c>-t</c> (it outlives its clients), stopped with SIGTERM and waited for until it is gone.
/// </summary>
internal sealed class QemuNbdProcess : IDisposable
{
    private readonly int _pid;
    private bool _stopped;

    private QemuNbdProcess(int pid, string socket)
    {
        _pid = pid;
        Uri = $"nbd+unix:///?socket={socket}";
    }

    /// <summary>The export's URI for qemu-io/nbdinfo.</summary>
    public string Uri { get; }

    /// <summary>Starts <c>qemu-nbd -t -f qcow2 --fork</c> on <paramref name="image"/>, its socket and pid file in <paramref name="dir"/>.</summary>
    /// <param name="image">The qcow2 image.</param>
    /// <param name="dir">Where the socket and pid file go.</param>
    /// <param name="extra">More qemu-nbd options (-r, -B BITMAP ...).</param>
    public static QemuNbdProcess Start(string image, TempDir dir, params string[] extra)
    {
        var socket = dir.File("qemu-nbd.sock");
        var pidFile = dir.File("qemu-nbd.pid");
        QemuTools.Run("qemu-nbd", ["-t", "-f", "qcow2", "--fork", "--pid-file", pidFile, "-k", socket, .. extra, image]).EnsureSuccess();
        return new QemuNbdProcess(int.Parse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture), socket);
    }

    /// <summary>SIGTERM, then blocks until the process has exited (its image locks are gone with it).</summary>
    public void Stop()
    {
        if (_stopped) return;
        _stopped = true;
        var pid = _pid.ToString(CultureInfo.InvariantCulture);
        QemuTools.Run("kill", "-TERM", pid).EnsureSuccess();
        // tail --pid returns when the process ends: a wait for the exit itself, bounded by Run's timeout.
        QemuTools.Run("tail", ["--pid=" + pid, "-f", "/dev/null"], timeoutSeconds: 30).EnsureSuccess();
    }

    public void Dispose()
    {
        if (_stopped) return;
        try { Stop(); } catch (InvalidOperationException) { } catch (TimeoutException) { }
    }
}
