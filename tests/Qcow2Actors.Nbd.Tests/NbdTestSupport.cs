using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>A fact that needs the NBD client tools; skips with the reason when they are absent outside CI.</summary>
public sealed class NbdFactAttribute : FactAttribute
{
    public NbdFactAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io", "nbdinfo", "nbdcopy", "fio"); }
}

internal static class TestServers
{
    /// <summary>A started server on an ephemeral loopback port.</summary>
    public static Task<NbdServer> StartTcpAsync(params INbdExport[] exports) => StartTcpAsync(receiveThreads: true, exports);

    /// <summary>A started server on an ephemeral loopback port; <paramref name="receiveThreads"/> as <see cref="NbdServerOptions.ReceiveThreads"/>.</summary>
    public static async Task<NbdServer> StartTcpAsync(bool receiveThreads, params INbdExport[] exports)
    {
        var server = new NbdServer(NbdServerOptions.Tcp(exports, port: 0) with { ReceiveThreads = receiveThreads });
        await server.StartAsync();
        return server;
    }

    public static async Task<NbdServer> StartUnixAsync(string socketPath, params INbdExport[] exports)
    {
        var server = new NbdServer(NbdServerOptions.Unix(exports, socketPath));
        await server.StartAsync();
        return server;
    }

    /// <summary>Waits until the server has no open connections (they close asynchronously), woken by each close.</summary>
    public static async Task WaitForNoConnectionsAsync(NbdServer server)
    {
        using var guard = new CancellationTokenSource(TimeSpan.FromSeconds(10)); // only against a hang
        while (true)
        {
            var closed = server.NextConnectionClosed; // before the count, so a close in between is seen
            if (server.ConnectionCount == 0) return;
            try
            {
                await closed.WaitAsync(guard.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"{server.ConnectionCount} connection(s) still open");
            }
        }
    }

    public static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}

/// <summary>
/// A deliberately minimal hand-written client, so tests can send exactly the bytes they
/// want (including wrong ones) and inspect replies field by field.
/// </summary>
internal sealed class RawNbdClient : IAsyncDisposable
{
    public const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2, CmdFlush = 3, CmdTrim = 4, CmdWriteZeroes = 6, CmdBlockStatus = 7;
    public const ushort FlagFua = 1, FlagNoHole = 2, FlagDf = 4, FlagReqOne = 8, FlagFastZero = 16;
    public const uint OptExportName = 1, OptAbort = 2, OptList = 3, OptStartTls = 5, OptInfo = 6, OptGo = 7, OptStructuredReply = 8, OptListMeta = 9, OptSetMeta = 10;
    public const uint RepAck = 1, RepServer = 2, RepInfo = 3, RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000001, RepErrInvalid = 0x80000003, RepErrTlsReqd = 0x80000005, RepErrUnknown = 0x80000006;

    private readonly Socket _socket;

    /// <summary>The connection: the socket's stream, or the TLS stream after <see cref="StartTlsAsync"/>.</summary>
    public Stream Stream { get; private set; }
    public ushort HandshakeFlags { get; private set; }

    private RawNbdClient(Socket socket)
    {
        _socket = socket;
        Stream = new NetworkStream(socket, ownsSocket: true);
    }

    public static async Task<RawNbdClient> ConnectAsync(EndPoint endPoint, bool handshake = true, uint clientFlags = 3)
    {
        var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endPoint);
        var client = new RawNbdClient(socket);
        if (handshake) await client.HandshakeAsync(clientFlags);
        return client;
    }

    public async Task HandshakeAsync(uint clientFlags = 3)
    {
        var hello = await ReadAsync(18);
        Assert.Equal(0x4e42444d41474943UL, BinaryPrimitives.ReadUInt64BigEndian(hello));
        Assert.Equal(0x49484156454F5054UL, BinaryPrimitives.ReadUInt64BigEndian(hello.AsSpan(8)));
        HandshakeFlags = BinaryPrimitives.ReadUInt16BigEndian(hello.AsSpan(16));
        await WriteAsync(U32(clientFlags)); // 3 = fixed newstyle + no zeroes
    }

    public async Task SendOptionAsync(uint option, byte[] data)
    {
        var header = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(header, 0x49484156454F5054);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), (uint)data.Length);
        await WriteAsync([.. header, .. data]);
    }

    public async Task<(uint Option, uint Type, byte[] Data)> ReadOptionReplyAsync()
    {
        var header = await ReadAsync(20);
        Assert.Equal(0x3e889045565a9UL, BinaryPrimitives.ReadUInt64BigEndian(header));
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        return (BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), await ReadAsync((int)length));
    }

    /// <summary>Sends an option and collects replies up to the final one (ACK or an error).</summary>
    public async Task<List<(uint Type, byte[] Data)>> OptionAsync(uint option, byte[] data)
    {
        await SendOptionAsync(option, data);
        var replies = new List<(uint, byte[])>();
        while (true)
        {
            var (opt, type, payload) = await ReadOptionReplyAsync();
            Assert.Equal(option, opt);
            replies.Add((type, payload));
            if (type == RepAck || (type & 0x80000000) != 0) return replies;
        }
    }

    public static byte[] InfoRequest(string name, params ushort[] infos)
    {
        var n = Encoding.UTF8.GetBytes(name);
        var data = new byte[4 + n.Length + 2 + 2 * infos.Length];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)n.Length);
        n.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(4 + n.Length), (ushort)infos.Length);
        for (var i = 0; i < infos.Length; i++) BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6 + n.Length + 2 * i), infos[i]);
        return data;
    }

    public static byte[] MetaRequest(string name, params string[] queries)
    {
        var parts = new List<byte>();
        var n = Encoding.UTF8.GetBytes(name);
        parts.AddRange(U32((uint)n.Length));
        parts.AddRange(n);
        parts.AddRange(U32((uint)queries.Length));
        foreach (var q in queries)
        {
            var b = Encoding.UTF8.GetBytes(q);
            parts.AddRange(U32((uint)b.Length));
            parts.AddRange(b);
        }
        return [.. parts];
    }

    /// <summary>Negotiates (optionally structured replies and base:allocation) and enters transmission.</summary>
    public async Task<(ulong Size, ushort Flags)> GoAsync(string name, bool structured = false, bool meta = false)
    {
        if (structured) Assert.Equal(RepAck, (await OptionAsync(OptStructuredReply, [])).Last().Type);
        if (meta)
        {
            var replies = await OptionAsync(OptSetMeta, MetaRequest(name, "base:allocation"));
            Assert.Equal(RepMetaContext, replies[0].Type);
            Assert.Equal(RepAck, replies[^1].Type);
        }
        var go = await OptionAsync(OptGo, InfoRequest(name));
        Assert.Equal(RepAck, go[^1].Type);
        var export = go.Single(r => r.Type == RepInfo && BinaryPrimitives.ReadUInt16BigEndian(r.Data) == 0).Data;
        return (BinaryPrimitives.ReadUInt64BigEndian(export.AsSpan(2)), BinaryPrimitives.ReadUInt16BigEndian(export.AsSpan(10)));
    }

    public static byte[] Request(ushort flags, ushort type, ulong handle, ulong offset, uint length, byte[]? payload = null, uint magic = 0x25609513)
    {
        var r = new byte[28 + (payload?.Length ?? 0)];
        BinaryPrimitives.WriteUInt32BigEndian(r, magic);
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), handle);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(24), length);
        payload?.CopyTo(r, 28);
        return r;
    }

    public Task SendRequestAsync(ushort flags, ushort type, ulong handle, ulong offset, uint length, byte[]? payload = null) =>
        WriteAsync(Request(flags, type, handle, offset, length, payload));

    /// <summary>Reads a simple reply; <paramref name="dataLength"/> bytes follow it only on success.</summary>
    public async Task<(uint Error, ulong Handle, byte[] Data)> ReadSimpleReplyAsync(int dataLength = 0)
    {
        var header = await ReadAsync(16);
        Assert.Equal(0x67446698u, BinaryPrimitives.ReadUInt32BigEndian(header));
        var error = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(4));
        var handle = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8));
        var data = error == 0 && dataLength > 0 ? await ReadAsync(dataLength) : [];
        return (error, handle, data);
    }

    /// <summary>
    /// Reads the next reply, simple or a structured chunk (a server may answer requests in any order): a simple
    /// reply comes back with Type 0 and its error as the payload's first four bytes, as an error chunk carries it.
    /// </summary>
    public async Task<(ushort Flags, ushort Type, ulong Handle, uint Error, byte[] Payload)> ReadAnyReplyAsync()
    {
        var magic = BinaryPrimitives.ReadUInt32BigEndian(await ReadAsync(4));
        if (magic == 0x67446698u)
        {
            var rest = await ReadAsync(12);
            var error = BinaryPrimitives.ReadUInt32BigEndian(rest);
            return (0, 0, BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)), error, []);
        }
        Assert.Equal(0x668e33efu, magic);
        var header = await ReadAsync(16);
        var payload = await ReadAsync((int)BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)));
        ushort type = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(2));
        return (BinaryPrimitives.ReadUInt16BigEndian(header), type, BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(4)),
            (type & 0x8000) != 0 ? BinaryPrimitives.ReadUInt32BigEndian(payload) : 0, payload);
    }

    public async Task<(ushort Flags, ushort Type, ulong Handle, byte[] Payload)> ReadChunkAsync()
    {
        var header = await ReadAsync(20);
        Assert.Equal(0x668e33efu, BinaryPrimitives.ReadUInt32BigEndian(header));
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        return (BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(4)), BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(6)),
            BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8)), await ReadAsync((int)length));
    }

    /// <summary>
    /// Sends NBD_OPT_STARTTLS and, on its ACK, runs a TLS handshake presenting <paramref name="clientCertificate"/>
    /// (none when null) and trusting only <paramref name="authority"/> for the server.
    /// </summary>
    /// <exception cref="AuthenticationException">The server refused the handshake.</exception>
    public async Task StartTlsAsync(X509Certificate2? clientCertificate, X509Certificate2 authority)
    {
        Assert.Equal(RepAck, (await OptionAsync(OptStartTls, [])).Single().Type);
        var ssl = new SslStream(Stream, leaveInnerStreamOpen: true);
        var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
        policy.CustomTrustStore.Add(authority);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ClientCertificates = clientCertificate is null ? null : [clientCertificate],
            CertificateChainPolicy = policy,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
        });
        Stream = ssl;
    }

    public async Task WriteAsync(byte[] data) => await Stream.WriteAsync(data);

    public async Task<byte[]> ReadAsync(int count)
    {
        var buffer = new byte[count];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await Stream.ReadExactlyAsync(buffer, timeout.Token);
        return buffer;
    }

    /// <summary>True when the server closes the connection (EOF or reset) within the timeout.</summary>
    public async Task<bool> WaitForCloseAsync(int timeoutMs = 5000)
    {
        using var timeout = new CancellationTokenSource(timeoutMs);
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                if (await Stream.ReadAsync(buffer, timeout.Token) == 0) return true;
            }
        }
        catch (OperationCanceledException) { return false; }
        catch (IOException) { return true; }
        catch (AuthenticationException) { return true; } // TLS 1.3: the server's alert for our certificate arrives on the first read
    }

    public void HardClose() => _socket.Close(0);

    public static byte[] U32(uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        return b;
    }

    public async ValueTask DisposeAsync() => await Stream.DisposeAsync();
}

/// <summary>
/// Forwards every required export member to <c>inner</c>; a test wrapper overrides only what it changes. A wrapper that
/// implements one of <see cref="INbdExport"/>'s default members (TryReadNow, the meta contexts) lists the interface
/// again, so its method, not the interface's default, is the one the server calls.
/// </summary>
internal abstract class DelegatingExport(INbdExport inner) : INbdExport
{
    public virtual string Name => inner.Name;
    public virtual long Size => inner.Size;
    public virtual bool IsReadOnly => inner.IsReadOnly;
    public virtual ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) => inner.ReadAsync(offset, buffer, cancellationToken);
    public virtual ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) => inner.WriteAsync(offset, data, fua, cancellationToken);
    public virtual ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken) =>
        inner.WriteZeroesAsync(offset, length, mayUnmap, fastZero, fua, cancellationToken);
    public virtual ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) => inner.TrimAsync(offset, length, fua, cancellationToken);
    public virtual ValueTask FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
    public virtual ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken) =>
        inner.GetBlockStatusAsync(offset, length, cancellationToken);
}

/// <summary>Blocks the calling thread in WriteAsync until released (at most 30 s), as a pwrite stuck in the kernel does.</summary>
internal sealed class StuckWriteExport(INbdExport inner, ManualResetEventSlim release) : DelegatingExport(inner)
{
    public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        Entered.TrySetResult();
        release.Wait(TimeSpan.FromSeconds(30), CancellationToken.None);
        return base.WriteAsync(offset, data, fua, cancellationToken);
    }
}

/// <summary>Wraps an export to delay or fail chosen requests.</summary>
internal sealed class ScriptedExport(INbdExport inner) : INbdExport
{
    public Func<long, Task>? BeforeRead { get; set; }
    public Func<long, Exception?>? WriteFailure { get; set; }
    public Func<long, Task>? BeforeBlockStatus { get; set; }

    public string Name => inner.Name;
    public string? Tenant => inner.Tenant;
    public long Size => inner.Size;
    public bool IsReadOnly => inner.IsReadOnly;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (BeforeRead is not null) await BeforeRead(offset);
        await inner.ReadAsync(offset, buffer, cancellationToken);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        if (WriteFailure?.Invoke(offset) is { } failure) throw failure;
        return inner.WriteAsync(offset, data, fua, cancellationToken);
    }

    public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken) =>
        inner.WriteZeroesAsync(offset, length, mayUnmap, fastZero, fua, cancellationToken);

    public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) => inner.TrimAsync(offset, length, fua, cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public async ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        if (BeforeBlockStatus is not null) await BeforeBlockStatus(offset);
        return await inner.GetBlockStatusAsync(offset, length, cancellationToken);
    }
}
