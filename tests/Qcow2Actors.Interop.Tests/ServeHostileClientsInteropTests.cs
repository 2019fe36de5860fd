using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a serve</c> out of process against clients that try to take it from everyone else: a thousand
/// connections at once, and one that pipelines reads and never reads a reply. The server's resident
/// memory (VmRSS and its peak VmHWM, from /proc) stays under a stated bound and a client of another
/// export keeps reading and writing correct data meanwhile. And clients that reset with replies owed.
/// </summary>
public sealed class ServeHostileClientsInteropTests(ITestOutputHelper output) : IDisposable
{
    private const int MiB = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string NewImage(string name, byte pattern)
    {
        var img = _dir.File(name);
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, "64M").EnsureSuccess();
        QemuTools.QemuIo("-c", $"write -P 0x{pattern:x2} 0 64M", img).EnsureSuccess();
        return img;
    }

    /// <summary>
    /// 1,000 connections: 800 choose export <c>a</c> and sit idle, 200 more connect and never negotiate
    /// (the most allowed, <c>--max-negotiating 200</c>); 100 newcomers then close the 100 oldest of those.
    /// With the negotiating bound full of idle handshakes a qemu-io client of export <c>b</c> still gets in and
    /// writes and reads back 16 MiB correctly, and the server peaks under 400 MiB.
    /// </summary>
    [ServeFact]
    public async Task A_thousand_connections_leave_memory_bounded_and_another_exports_client_working()
    {
        var a = NewImage("a.qcow2", 0x11);
        var b = NewImage("b.qcow2", 0x22);
        using var server = await ServeProcess.StartAsync(2, "--port", "0", "--max-connections", "1100", "--max-negotiating", "200",
            "--handshake-timeout", "60", a, b);
        var endPoint = new IPEndPoint(IPAddress.Loopback, new Uri(server.Uri).Port);
        QemuTools.QemuIo("-f", "raw", server.Uris[1], "-c", "read -P 0x22 0 1M").EnsureSuccess(); // warm up the paths measured below
        var before = Memory(server.Pid);

        var sockets = new List<Socket>();
        try
        {
            // In batches below the negotiating bound: each batch is in transmission before the next connects.
            for (var batch = 0; batch < 8; batch++)
                sockets.AddRange(await Task.WhenAll(Enumerable.Range(0, 100).Select(_ => ConnectAndGoAsync(endPoint, "a.qcow2"))));
            // One after another, so the server sees them in this order.
            var idle = new List<Socket>();
            for (var i = 0; i < 200; i++) idle.Add(await ConnectAndReadHelloAsync(endPoint));
            sockets.AddRange(idle);
            Assert.Equal(1000, sockets.Count);

            // Beyond max-negotiating each newcomer closes the oldest handshake; the others stay.
            for (var i = 0; i < 100; i++) sockets.Add(await ConnectAndReadHelloAsync(endPoint));
            for (var i = 0; i < 100; i++) Assert.True(await AwaitCloseAsync(idle[i]), $"idle handshake {i} outlived 100 newcomers");

            QemuTools.QemuIo("-f", "raw", server.Uris[1], "-c", "write -P 0x33 0 16M", "-c", "read -P 0x33 0 16M", "-c", "read -P 0x22 16M 1M")
                .EnsureSuccess();
            var during = Memory(server.Pid);
            output.WriteLine($"1,000 connections: VmRSS {before.Rss >> 20} -> {during.Rss >> 20} MiB, peak (VmHWM) {during.Peak >> 20} MiB");
            Assert.False(server.HasExited, $"serve died: {server.StdErr}");
            Assert.True(during.Peak < 400L * MiB, $"serve peaked at {during.Peak >> 20} MiB with 1,000 connections");

            // The transmitting ones still work: one of them reads export a.
            var first = sockets[0];
            await first.SendAsync(Request(0, 7, 0, 4096));
            var reply = await ReceiveExactAsync(first, 16 + 4096);
            Assert.Equal((0x67446698u, 0u, 7ul), (BinaryPrimitives.ReadUInt32BigEndian(reply), BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(4)),
                BinaryPrimitives.ReadUInt64BigEndian(reply.AsSpan(8))));
            Assert.True(reply.AsSpan(16).IndexOfAnyExcept((byte)0x11) < 0, "export a read back wrong data");
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
        Assert.Equal(0, server.Stop());
        Assert.Contains("(max-negotiating)", server.StdErr);
        QemuTools.AssertCheckClean(a);
        QemuTools.AssertCheckClean(b);
        QemuTools.QemuIo("-r", "-c", "read -P 0x33 0 16M", b).EnsureSuccess();
    }

    /// <summary>
    /// A client that sends two million 1 MiB READs (56 MB of headers) and reads no reply: the server holds
    /// at most <c>--max-in-flight-bytes 16M</c> of replies (with 1,024 requests allowed in flight, the byte bound
    /// is what holds: 1,024 reads would be 1 GiB), stops reading the client (so its send never
    /// completes), and stays within 256 MiB of where it started (16 MiB of replies, the rest pooled buffers the
    /// runtime keeps per thread; without the byte bound 1,024 reads alone would be 1 GiB), while a qemu-io client of export <c>b</c>
    /// writes and reads back 32 MiB correctly. The flooding client, reading at last, gets correct data.
    /// </summary>
    [ServeFact]
    public async Task A_client_that_pipelines_reads_and_never_reads_replies_cannot_grow_server_memory()
    {
        var a = NewImage("a.qcow2", 0x44);
        var b = NewImage("b.qcow2", 0x55);
        using var server = await ServeProcess.StartAsync(2, "--port", "0", "--max-in-flight-bytes", "16M", "--max-in-flight-requests", "1024", a, b);
        var endPoint = new IPEndPoint(IPAddress.Loopback, new Uri(server.Uri).Port);
        // Warm up: the same qemu-io run as below and reads of export a, so what pools and caches keep for them is in the baseline.
        string[] victim = ["-f", "raw", server.Uris[1], "-c", "write -P 0x66 0 32M", "-c", "read -P 0x66 0 32M", "-c", "read -P 0x55 32M 32M"];
        QemuTools.QemuIo(victim).EnsureSuccess();
        QemuTools.QemuIo("-f", "raw", server.Uri, "-c", "read -P 0x44 0 16M", "-c", "read -P 0x44 16M 16M").EnsureSuccess();
        var before = Memory(server.Pid);

        using var flood = await ConnectAndGoAsync(endPoint, "a.qcow2");
        const int requests = 2_000_000;
        var headers = new byte[requests * 28];
        for (var i = 0; i < requests; i++) Request(0, (ulong)i, (ulong)(i % 64) * MiB, MiB).CopyTo(headers, i * 28);
        var sending = flood.SendAsync(headers, SocketFlags.None);

        QemuTools.QemuIo(victim).EnsureSuccess();
        var during = Memory(server.Pid);
        output.WriteLine($"pipelining without reading: VmRSS {before.Rss >> 20} -> {during.Rss >> 20} MiB, peak (VmHWM) {during.Peak >> 20} MiB");
        Assert.False(sending.IsCompleted, "the server took in 56 MB of requests whose replies nobody read");
        Assert.False(server.HasExited, $"serve died: {server.StdErr}");
        Assert.True(during.Peak - before.Rss < 256L * MiB, $"serve grew from {before.Rss >> 20} MiB to a peak of {during.Peak >> 20} MiB");

        // The replies were held, not lost: the first ones (in completion order) answer distinct early requests with the right data.
        var handles = new HashSet<ulong>();
        for (var i = 0; i < 4; i++)
        {
            var reply = await ReceiveExactAsync(flood, 16 + MiB);
            Assert.Equal((0x67446698u, 0u), (BinaryPrimitives.ReadUInt32BigEndian(reply), BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(4))));
            var handle = BinaryPrimitives.ReadUInt64BigEndian(reply.AsSpan(8));
            Assert.True(handle < 1000 && handles.Add(handle), $"reply {i} has handle {handle}");
            Assert.True(reply.AsSpan(16).IndexOfAnyExcept((byte)0x44) < 0, $"reply {i} carried wrong data");
        }
        flood.Close(0);
        Assert.Equal(0, server.Stop());
        QemuTools.AssertCheckClean(b);
        QemuTools.QemuIo("-r", "-c", "read -P 0x66 0 32M", b).EnsureSuccess();
    }

    /// <summary>
    /// Clients that reset their connection (RST, as fio's NBD engine does when a job ends) while the server still owes
    /// them replies: serve keeps serving, and its failed sends and receives cost it no stack trace with file and line
    /// numbers, which would load System.Reflection.Metadata and read its PDB files for the rest of its life.
    /// </summary>
    [ServeFact]
    public async Task Clients_that_reset_with_replies_owed_cost_serve_no_pdb_reader_and_it_serves_on()
    {
        var a = NewImage("a.qcow2", 0x44);
        using var server = await ServeProcess.StartAsync(1, "--port", "0", a);
        var endPoint = new IPEndPoint(IPAddress.Loopback, new Uri(server.Uri).Port);
        for (var round = 0; round < 3; round++)
        {
            using var client = await ConnectAndGoAsync(endPoint, "a.qcow2");
            // 32 reads of 1 MiB: more reply than the socket buffers hold, so sends are still owed when the reset lands.
            var headers = new byte[32 * 28];
            for (var i = 0; i < 32; i++) Request(0, (ulong)i, (ulong)i * MiB, MiB).CopyTo(headers, i * 28);
            await client.SendAsync(headers, SocketFlags.None);
            await ReceiveExactAsync(client, 16 + MiB); // the server is sending
            client.LingerState = new LingerOption(true, 0);
            client.Close();
        }

        QemuTools.QemuIo("-f", "raw", "-r", server.Uri, "-c", "read -P 0x44 0 4M").EnsureSuccess();
        var loaded = File.ReadAllLines($"/proc/{server.Pid}/maps")
            .Where(l => l.EndsWith("System.Reflection.Metadata.dll", StringComparison.Ordinal) || l.EndsWith(".pdb", StringComparison.Ordinal))
            .Select(l => l[(l.LastIndexOf(' ') + 1)..]).Distinct().ToList();
        Assert.True(loaded.Count == 0, "serve mapped " + string.Join(", ", loaded));
        Assert.Equal(0, server.Stop());
        QemuTools.AssertCheckClean(a);
    }

    /// <summary>VmRSS and VmHWM (the peak resident set) of a process, in bytes.</summary>
    internal static (long Rss, long Peak) Memory(int pid)
    {
        long rss = 0, peak = 0;
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kib(line);
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) peak = Kib(line);
        }
        return (rss, peak);

        static long Kib(string line) =>
            1024 * long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }

    internal static async Task<Socket> ConnectAndReadHelloAsync(EndPoint endPoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint);
        var hello = await ReceiveExactAsync(socket, 18);
        Assert.Equal(0x49484156454F5054UL, BinaryPrimitives.ReadUInt64BigEndian(hello.AsSpan(8)));
        return socket;
    }

    /// <summary>Negotiates fixed newstyle and NBD_OPT_GO for <paramref name="export"/>; returns the transmitting socket.</summary>
    private static async Task<Socket> ConnectAndGoAsync(EndPoint endPoint, string export)
    {
        var socket = await ConnectAndReadHelloAsync(endPoint);
        var reply = await GoAsync(socket, export);
        Assert.True(reply == 1, $"NBD_OPT_GO answered 0x{reply:x}"); // NBD_REP_ACK
        return socket;
    }

    /// <summary>Sends the client flags and NBD_OPT_GO for <paramref name="export"/>; returns the final reply type (NBD_REP_ACK = 1, or the error).</summary>
    internal static async Task<uint> GoAsync(Socket socket, string export)
    {
        var name = Encoding.UTF8.GetBytes(export);
        var option = new byte[4 + 16 + 4 + name.Length + 2];
        BinaryPrimitives.WriteUInt32BigEndian(option, 3); // client flags: fixed newstyle, no zeroes
        BinaryPrimitives.WriteUInt64BigEndian(option.AsSpan(4), 0x49484156454F5054);
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(12), 7); // NBD_OPT_GO
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(16), (uint)(4 + name.Length + 2));
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(20), (uint)name.Length);
        name.CopyTo(option, 24);
        await socket.SendAsync(option);
        while (true)
        {
            var header = await ReceiveExactAsync(socket, 20);
            var type = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            await ReceiveExactAsync(socket, (int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16)));
            if (type != 3) return type; // NBD_REP_INFO comes before the final reply
        }
    }

    /// <summary>True when the server closes <paramref name="socket"/> (EOF or reset) within 10 s.</summary>
    private static async Task<bool> AwaitCloseAsync(Socket socket)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            var buffer = new byte[64];
            while (await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token) > 0) { }
            return true;
        }
        catch (SocketException)
        {
            return true; // reset: closed all the same
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    internal static byte[] Request(ushort type, ulong handle, ulong offset, uint length)
    {
        var r = new byte[28];
        BinaryPrimitives.WriteUInt32BigEndian(r, 0x25609513);
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), handle);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(24), length);
        return r;
    }

    internal static async Task<byte[]> ReceiveExactAsync(Socket socket, int count)
    {
        var buffer = new byte[count];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var read = 0;
        while (read < count)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, timeout.Token);
            if (n == 0) throw new EndOfStreamException($"server closed after {read} of {count} bytes");
            read += n;
        }
        return buffer;
    }
}
