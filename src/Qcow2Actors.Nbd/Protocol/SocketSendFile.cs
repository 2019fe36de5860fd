using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// sendfile(2) from a host file to a connection's socket: the kernel moves page-cache pages to the
/// socket without copying them through the process. .NET's <see cref="Socket.SendFile(string)"/> takes a
/// path and sends a whole file, so the call is made directly. Never waits: the sockets are non-blocking,
/// and a full one is reported as 0 bytes sent for the caller to wait the ordinary way. The file side can wait:
/// a page evicted since it was found cached is read from the disk in the call, on the calling thread.
/// </summary>
internal static partial class SocketSendFile
{
    private const int Eintr = 4, Eagain = 11;

    /// <summary>Whether the system has the call (Linux).</summary>
    public static bool IsSupported { get; } = OperatingSystem.IsLinux();

    /// <summary>
    /// Sends up to <paramref name="count"/> bytes of <paramref name="file"/> from <paramref name="fileOffset"/> and
    /// returns how many went; 0 when the socket has no room now.
    /// </summary>
    /// <exception cref="IOException">The file ended inside the range, or the call failed (the socket closed, a read error).</exception>
    public static int Send(Socket socket, SafeFileHandle file, long fileOffset, int count)
    {
        var sock = socket.SafeHandle;
        bool sockAdded = false, fileAdded = false;
        try
        {
            // References for the call: a handle closed meanwhile must not leave its number to another file.
            sock.DangerousAddRef(ref sockAdded);
            file.DangerousAddRef(ref fileAdded);
            while (true)
            {
                long offset = fileOffset;
                nint n = SendFile((int)sock.DangerousGetHandle(), (int)file.DangerousGetHandle(), ref offset, (nuint)count);
                if (n > 0) return (int)n;
                if (n == 0) throw new IOException($"the image file ended at {fileOffset}, inside a reply's data");
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Eintr) continue;
                if (errno == Eagain) return 0;
                throw new IOException($"sendfile failed: errno {errno}");
            }
        }
        finally
        {
            if (fileAdded) file.DangerousRelease();
            if (sockAdded) sock.DangerousRelease();
        }
    }

    [LibraryImport("libc", EntryPoint = "sendfile", SetLastError = true)]
    private static partial nint SendFile(int outFd, int inFd, ref long offset, nuint count);
}
