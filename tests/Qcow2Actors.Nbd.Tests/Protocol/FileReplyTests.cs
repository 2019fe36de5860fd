using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Protocol;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// Large reads of cached qcow2 data go from the image file to the socket (sendfile), in simple and structured
/// replies, with the guest's bytes; small ones do not. A client that stops reading holds the pins for
/// <see cref="ReplySender.PinGrace"/> only: then the data still to go is copied, the pins let go, and the client
/// still gets every byte in order.
/// </summary>
public sealed class FileReplyTests : IDisposable
{
    private const int Cluster = 65536;
    private const int Mib = 1 << 20;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Counts the pins the export hands out and the reads that go the ordinary way.</summary>
    private sealed class PinCountingExport(Qcow2Export export) : DelegatingExport(export), INbdExport
    {
        private readonly Qcow2Export _export = export;
        public int Pins, OrdinaryReads;

        public HostFileRange? TryPinFileRange(long offset, int length)
        {
            var pin = _export.TryPinFileRange(offset, length);
            if (pin is not null) Interlocked.Increment(ref Pins);
            return pin;
        }

        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref OrdinaryReads);
            return base.ReadAsync(offset, buffer, cancellationToken);
        }
    }

    /// <summary>
    /// A 16 MiB image with 4 MiB of data from 0, open read-only and read once, so its table and pages are cached
    /// (large writes pass the page cache by); returns the image and the data.
    /// </summary>
    private async Task<(Qcow2Image Image, byte[] Data)> CachedImageAsync()
    {
        var path = _dir.File("f.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 16 * Mib, ClusterSize = Cluster });
        var data = TestServers.RandomBytes(4 * Mib, 11);
        await using (var writer = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
            await writer.WriteAsync(0, data);
        var image = await Qcow2Image.OpenAsync(path);
        await image.ReadAsync(0, new byte[4 * Mib]);
        return (image, data);
    }

    [LinuxFact]
    public async Task Large_reads_of_cached_data_go_from_the_file_in_simple_and_structured_replies_and_small_ones_do_not()
    {
        var (image, data) = await CachedImageAsync();
        await using var _ = image;
        var export = new PinCountingExport(new Qcow2Export(image, "e"));
        await using var server = await TestServers.StartTcpAsync(export);

        await using (var simple = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await simple.GoAsync("e");
            await simple.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, Mib);
            await simple.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 3 * Mib, Mib);
            var replies = new[] { await simple.ReadSimpleReplyAsync(Mib), await simple.ReadSimpleReplyAsync(Mib) }.OrderBy(r => r.Handle).ToArray();
            Assert.All(replies, r => Assert.Equal(0u, r.Error));
            Assert.Equal(data.AsSpan(0, Mib).ToArray(), replies[0].Data);
            Assert.Equal(data.AsSpan(3 * Mib, Mib).ToArray(), replies[1].Data);
        }
        Assert.Equal(2, export.Pins);
        Assert.Equal(0, export.OrdinaryReads);

        await using (var structured = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await structured.GoAsync("e", structured: true);
            await structured.SendRequestAsync(0, RawNbdClient.CmdRead, 3, 2 * Mib + 4096, Mib);
            var chunk = await structured.ReadChunkAsync();
            Assert.Equal(3ul, chunk.Handle);
            Assert.Equal(1, chunk.Type); // NBD_REPLY_TYPE_OFFSET_DATA
            Assert.Equal((ulong)(2 * Mib + 4096), BinaryPrimitives.ReadUInt64BigEndian(chunk.Payload));
            Assert.Equal(data.AsSpan(2 * Mib + 4096, Mib).ToArray(), chunk.Payload.AsSpan(8).ToArray());

            // 64 KiB is answered inline from the page cache, never pinned.
            await structured.SendRequestAsync(0, RawNbdClient.CmdRead, 4, 4096, Cluster);
            var small = await structured.ReadChunkAsync();
            Assert.Equal(data.AsSpan(4096, Cluster).ToArray(), small.Payload.AsSpan(8).ToArray());
        }
        Assert.Equal(3, export.Pins);
    }

    [LinuxFact]
    public async Task A_large_read_over_a_unix_socket_goes_from_the_file_too()
    {
        var (image, data) = await CachedImageAsync();
        await using var _ = image;
        var export = new PinCountingExport(new Qcow2Export(image, "e"));
        await using var server = await TestServers.StartUnixAsync(_dir.File("nbd.sock"), export);
        await using var client = await RawNbdClient.ConnectAsync(new UnixDomainSocketEndPoint(_dir.File("nbd.sock")));
        await client.GoAsync("e", structured: true);
        // Eight at once, more than the socket holds: some sends wait for room and go on from the file afterwards.
        for (int i = 0; i < 8; i++) await client.SendRequestAsync(0, RawNbdClient.CmdRead, (ulong)i, (ulong)(i % 4 * Mib), Mib);
        for (int i = 0; i < 8; i++)
        {
            var chunk = await client.ReadChunkAsync();
            long offset = (long)chunk.Handle % 4 * Mib;
            Assert.Equal((ulong)offset, BinaryPrimitives.ReadUInt64BigEndian(chunk.Payload));
            Assert.Equal(data.AsSpan((int)offset, Mib).ToArray(), chunk.Payload.AsSpan(8).ToArray());
        }
        Assert.Equal(8, export.Pins);
        Assert.Equal(0, export.OrdinaryReads);
    }

    /// <summary>A reply sender over loopback with small fixed buffers, eight 1 MiB pinned replies handed to it, and a client that reads only when told.</summary>
    private sealed class SlowClientRig : IAsyncDisposable
    {
        public const int Replies = 8;
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private Socket _socket = null!;
        private int _releases;
        private int _at;
        private Qcow2Image? _image;

        public FakeTimeProvider Time { get; } = new();
        public ReplySender Sender { get; private set; } = null!;
        public Socket Client { get; private set; } = null!;
        public List<FileReplyBody> Bodies { get; } = new();
        public byte[] Expected { get; private set; } = [];
        public byte[] Received { get; private set; } = [];
        public SemaphoreSlim Stalls { get; } = new(0);
        public TaskCompletionSource AllReleased { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async Task StartAsync(Qcow2Image image, byte[] data)
        {
            _image = image;
            _listener.Start();
            // Small fixed buffers on both ends: eight 1 MiB replies cannot all fit while the client does not read.
            _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { SendBufferSize = 64 * 1024 };
            await _socket.ConnectAsync(_listener.LocalEndpoint);
            Client = await _listener.AcceptSocketAsync();
            Client.ReceiveBufferSize = 64 * 1024;
            Sender = new ReplySender(_socket, null,
                _ => { if (Interlocked.Increment(ref _releases) == Replies) AllReleased.TrySetResult(); },
                () => { }, Time, CancellationToken.None) { OnStall = () => Stalls.Release() };
            var expected = new MemoryStream();
            for (int i = 0; i < Replies; i++)
            {
                long offset = i % 4 * Mib;
                var pin = image.TryPinFileRange(offset, Mib);
                Assert.NotNull(pin);
                var body = new FileReplyBody(pin);
                Bodies.Add(body);
                var header = RequestBuffers.Rent(16);
                header.AsSpan(0, 16).Fill((byte)(0xA0 + i));
                expected.Write(header, 0, 16);
                expected.Write(data, (int)offset, Mib);
                Sender.Send(new OutgoingReply(header, 16, Charge: 1, body));
            }
            Expected = expected.ToArray();
            Received = new byte[Expected.Length];
        }

        /// <summary>The replies not all on the socket yet.</summary>
        public List<FileReplyBody> Unsent() => Bodies.Where(b => b.Sent < b.Length).ToList();

        /// <summary>Reads <paramref name="count"/> bytes (all that is left when null).</summary>
        public async Task ReadAsync(int? count = null)
        {
            int end = count is { } n ? _at + n : Received.Length;
            while (_at < end)
            {
                int got = await Client.ReceiveAsync(Received.AsMemory(_at, end - _at));
                Assert.True(got > 0, "the sender closed the connection");
                _at += got;
            }
        }

        public async ValueTask DisposeAsync()
        {
            Sender?.Dispose();
            _socket?.Dispose();
            Client?.Dispose();
            _listener.Stop();
            _listener.Dispose();
            Stalls.Dispose();
            if (_image is not null) await _image.DisposeAsync();
        }
    }

    /// <summary>A rig (owning its image) whose sender has started its first wait with every reply still to go pinned.</summary>
    private async Task<(SlowClientRig Rig, List<FileReplyBody> Unsent)> StalledRigAsync()
    {
        var (image, data) = await CachedImageAsync();
        var rig = new SlowClientRig();
        await rig.StartAsync(image, data);
        await rig.Stalls.WaitAsync(Timeout);
        var unsent = rig.Unsent();
        Assert.NotEmpty(unsent);
        Assert.All(unsent, b => Assert.NotNull(b.Pin)); // a short wait keeps the pins: nothing copied yet
        return (rig, unsent);
    }

    [LinuxFact]
    public async Task A_client_that_stops_reading_holds_the_pins_for_the_grace_only_and_still_gets_every_byte()
    {
        var (rig, unsent) = await StalledRigAsync();
        await using var _ = rig;

        rig.Time.Advance(ReplySender.PinGrace);
        Assert.All(unsent, b => Assert.Null(b.Pin)); // past the grace every reply still to go was copied, its pin let go

        await rig.ReadAsync();
        Assert.Equal(rig.Expected, rig.Received);
        await rig.AllReleased.Task.WaitAsync(Timeout);
        Assert.All(rig.Bodies, b => Assert.Null(b.Pin));
        Assert.False(rig.Sender.IsBroken);
    }

    [LinuxFact]
    public async Task A_client_that_reads_slowly_but_steadily_does_not_keep_pins_past_the_grace()
    {
        var (rig, _) = await StalledRigAsync();
        await using var __ = rig;
        // Every wait ends before the grace does: the client takes a little each time.
        rig.Time.Advance(ReplySender.PinGrace - TimeSpan.FromMilliseconds(1));
        await rig.ReadAsync(64 * 1024);
        await rig.Stalls.WaitAsync(Timeout);
        Assert.All(rig.Unsent(), b => Assert.NotNull(b.Pin)); // not yet a grace old

        rig.Time.Advance(TimeSpan.FromMilliseconds(2)); // pins a grace old; no single wait lasted that long
        while (rig.Stalls.Wait(0)) { } // waits before this point found the pins younger
        await rig.ReadAsync(64 * 1024);
        await rig.Stalls.WaitAsync(Timeout);
        Assert.All(rig.Unsent(), b => Assert.Null(b.Pin)); // the next wait copied them all

        await rig.ReadAsync();
        Assert.Equal(rig.Expected, rig.Received);
        await rig.AllReleased.Task.WaitAsync(Timeout);
        Assert.False(rig.Sender.IsBroken);
    }
}
