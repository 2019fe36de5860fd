using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Qcow2Actors.Nbd.Tests.Client;

/// <summary>
/// A hand-written server of the oldest fixed-newstyle kind: every option but EXPORT_NAME is NBD_REP_ERR_UNSUP (so no
/// GO, no structured replies), and transmission answers with simple replies only. It serves one connection, and
/// <see cref="CloseAfterRequests"/> makes it hang up after reading that many requests without answering the last.
/// </summary>
internal sealed class OldServer : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly byte[] _disk;
    private readonly Task _serving;

    public OldServer(byte[] disk, int closeAfterRequests = int.MaxValue, bool wrongCookie = false)
    {
        _disk = disk;
        CloseAfterRequests = closeAfterRequests;
        WrongCookie = wrongCookie;
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
        _serving = ServeAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;
    public int CloseAfterRequests { get; }

    /// <summary>Answers every request under a cookie the client never used.</summary>
    public bool WrongCookie { get; }
    public string? ExportNameAsked { get; private set; }

    /// <summary>The command types of the requests it read, in order.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<ushort> Commands { get; } = new();

    private async Task ServeAsync()
    {
        using var socket = await _listener.AcceptAsync();
        await using var stream = new NetworkStream(socket);
        var hello = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(hello, 0x4e42444d41474943);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(8), 0x49484156454F5054);
        BinaryPrimitives.WriteUInt16BigEndian(hello.AsSpan(16), 1); // fixed newstyle, no NO_ZEROES: the 124 zeroes follow EXPORT_NAME
        await stream.WriteAsync(hello);
        await stream.ReadExactlyAsync(new byte[4]);
        while (true)
        {
            var header = new byte[16];
            await stream.ReadExactlyAsync(header);
            var option = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
            var data = new byte[BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12))];
            await stream.ReadExactlyAsync(data);
            if (option == 1)
            {
                ExportNameAsked = System.Text.Encoding.UTF8.GetString(data);
                var reply = new byte[10 + 124];
                BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)_disk.Length);
                BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), 1 | 2); // HAS_FLAGS | READ_ONLY
                await stream.WriteAsync(reply);
                break;
            }
            var unsup = new byte[20];
            BinaryPrimitives.WriteUInt64BigEndian(unsup, 0x3e889045565a9);
            BinaryPrimitives.WriteUInt32BigEndian(unsup.AsSpan(8), option);
            BinaryPrimitives.WriteUInt32BigEndian(unsup.AsSpan(12), 0x80000001);
            await stream.WriteAsync(unsup);
        }
        for (var served = 0; ; served++)
        {
            var request = new byte[28];
            try { await stream.ReadExactlyAsync(request); }
            catch (EndOfStreamException) { return; }
            var type = BinaryPrimitives.ReadUInt16BigEndian(request.AsSpan(6));
            Commands.Enqueue(type);
            if (served + 1 >= CloseAfterRequests) return; // hang up without a reply
            if (type == 2) return; // DISC
            var offset = (int)BinaryPrimitives.ReadUInt64BigEndian(request.AsSpan(16));
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(request.AsSpan(24));
            var reply = new byte[16];
            BinaryPrimitives.WriteUInt32BigEndian(reply, 0x67446698);
            request.AsSpan(8, 8).CopyTo(reply.AsSpan(8));
            if (WrongCookie) reply[15] ^= 0xff;
            if (type != 0) BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(4), 22); // EINVAL for anything but READ
            await stream.WriteAsync(reply);
            if (type == 0) await stream.WriteAsync(_disk.AsMemory(offset, length));
        }
    }

    /// <summary>Waits for the served connection to end (the client's disconnect or the scripted hang-up).</summary>
    public Task Served => _serving;

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        try { await _serving; } catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException) { }
    }
}
