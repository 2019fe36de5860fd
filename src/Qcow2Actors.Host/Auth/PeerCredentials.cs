using System.Runtime.InteropServices;
using System.Net.Sockets;

namespace Qcow2Actors.Host.Auth;

/// <summary>The process on the other end of a Unix socket, as the kernel tells it (SO_PEERCRED, Linux).</summary>
internal readonly record struct PeerCredentials(int Pid, uint Uid, uint Gid)
{
    private const int SolSocket = 1;
    private const int SoPeerCred = 17;
    private const int UcredSize = 12; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }

    /// <summary>The peer of <paramref name="socket"/>; null when the kernel does not say (not Linux, not a Unix socket).</summary>
    public static PeerCredentials? Read(Socket socket)
    {
        if (!OperatingSystem.IsLinux() || socket.AddressFamily != AddressFamily.Unix) return null;
        Span<byte> ucred = stackalloc byte[UcredSize];
        try
        {
            if (socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) != UcredSize) return null;
        }
        catch (SocketException)
        {
            return null;
        }
        return new PeerCredentials(
            MemoryMarshal.Read<int>(ucred), // native byte order: the kernel's struct as it is
            MemoryMarshal.Read<uint>(ucred[4..]),
            MemoryMarshal.Read<uint>(ucred[8..]));
    }
}
