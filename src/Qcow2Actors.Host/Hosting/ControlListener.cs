using System.Net.Sockets;

namespace Qcow2Actors.Host.Hosting;

/// <summary>The control socket's file: a stale one (nobody answers) is replaced, a live one refuses start-up.</summary>
internal static class ControlListener
{
    private const UnixFileMode OwnerOnlyDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <exception cref="InvalidOperationException">Another process answers on <paramref name="path"/> (one line naming it).</exception>
    public static void Prepare(string path)
    {
        var directory = Path.GetDirectoryName(path)!;
        if (!Directory.Exists(directory))
        {
            if (OperatingSystem.IsWindows()) Directory.CreateDirectory(directory);
            else Directory.CreateDirectory(directory, OwnerOnlyDirectory);
        }
        if (!File.Exists(path)) return;
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException)
        {
            File.Delete(path); // left by a host that died
            return;
        }
        throw new InvalidOperationException($"another q2a host is listening on control socket '{path}'");
    }

    /// <summary>Only the owner may talk to the control API: the socket becomes mode 0600 once bound.</summary>
    public static void Restrict(string path)
    {
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }
}
