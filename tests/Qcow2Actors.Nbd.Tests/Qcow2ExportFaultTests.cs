using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Text;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>
/// An image that turns read-only while served (a failed fsync): the engine reports it once, and
/// writes fail over NBD with EIO naming the cause, not with EPERM as if the export were read-only.
/// </summary>
public sealed class Qcow2ExportFaultTests : IAsyncLifetime
{
    private const uint EPERM = 1, EIO = 5;
    private const ushort ReplyTypeError = 32769;
    private readonly TempDir _dir = new();
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create(name: "export-fault-tests");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task After_a_failed_fsync_writes_get_EIO_with_the_reason_and_the_fault_is_reported_once()
    {
        var path = _dir.File("disk.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1024 * 1024 });
        var faults = new ConcurrentQueue<Qcow2ImageFault>();
        var devices = new ConcurrentBag<FlushFailingDevice>();
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            OnFault = faults.Enqueue,
            DeviceFactory = (p, writable) =>
            {
                var device = new FlushFailingDevice(ResilientBlockDevice.OpenFile(p, writable));
                devices.Add(device);
                return device;
            },
        };
        var export = await Qcow2Export.OpenAsync(path, "disk", options, _host);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var (_, flags) = await c.GoAsync("disk", structured: true);
        Assert.Equal(0, flags & 2); // not advertised read-only

        await c.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4096, new byte[4096]);
        Assert.Equal(0u, await ErrorOfAsync(c, 1));
        foreach (var device in devices) device.FailFlushes = true;
        await c.SendRequestAsync(0, RawNbdClient.CmdFlush, 2, 0, 0);
        Assert.Equal(EIO, await ErrorOfAsync(c, 2));

        await c.SendRequestAsync(0, RawNbdClient.CmdWrite, 3, 8192, 4096, new byte[4096]);
        var chunk = await c.ReadChunkAsync();
        Assert.Equal((ReplyTypeError, 3ul), (chunk.Type, chunk.Handle));
        Assert.Equal(EIO, BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload));
        var message = Encoding.UTF8.GetString(chunk.Payload, 6, BinaryPrimitives.ReadUInt16BigEndian(chunk.Payload.AsSpan(4)));
        Assert.Contains("turned read-only: flush failed", message);
        await c.SendRequestAsync(0, RawNbdClient.CmdTrim, 4, 0, 65536);
        Assert.Equal(EIO, await ErrorOfAsync(c, 4));

        var fault = Assert.Single(faults);
        Assert.Equal((Path.GetFullPath(path), Qcow2ImageFaultKind.ReadOnly), (fault.Path, fault.Kind));
        Assert.StartsWith("flush failed", fault.Reason);
        Assert.True(fault.TurnsReadOnly);

        await server.StopAsync();
        await export.DisposeAsync();
        var close = faults.Last();
        Assert.Equal(2, faults.Count);
        Assert.Equal(Qcow2ImageFaultKind.UncleanClose, close.Kind);
        Assert.Contains("flush failed", close.Reason);
    }

    [Fact]
    public async Task An_export_opened_read_only_still_answers_writes_with_EPERM()
    {
        var path = _dir.File("ro.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1024 * 1024 });
        var export = await Qcow2Export.OpenAsync(path, "ro", new Qcow2OpenOptions { ReadOnly = true }, _host);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("ro");
        await c.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 512, new byte[512]);
        Assert.Equal(EPERM, await ErrorOfAsync(c, 1));
        await server.StopAsync();
        await export.DisposeAsync();
    }

    /// <summary>The errno of a payload-free reply, simple or a single structured chunk.</summary>
    private static async Task<uint> ErrorOfAsync(RawNbdClient c, ulong handle)
    {
        var magic = await c.ReadAsync(4);
        var rest = await c.ReadAsync(BinaryPrimitives.ReadUInt32BigEndian(magic) == 0x67446698u ? 12 : 16);
        if (BinaryPrimitives.ReadUInt32BigEndian(magic) == 0x67446698u)
        {
            Assert.Equal(handle, BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)));
            return BinaryPrimitives.ReadUInt32BigEndian(rest);
        }
        Assert.Equal(handle, BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)));
        var payload = await c.ReadAsync((int)BinaryPrimitives.ReadUInt32BigEndian(rest.AsSpan(12)));
        return BinaryPrimitives.ReadUInt16BigEndian(rest.AsSpan(2)) == ReplyTypeError ? BinaryPrimitives.ReadUInt32BigEndian(payload) : 0;
    }

    /// <summary>A device whose flushes fail with EIO once asked to, as a disk that lost writes.</summary>
    private sealed class FlushFailingDevice(IBlockDevice inner) : BlockDevice
    {
        public volatile bool FailFlushes;

        public override long Length => inner.Length;
        public override bool IsReadOnly => inner.IsReadOnly;
        public override string Name => inner.Name;
        protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken) => inner.ReadAsync(buffer, offset, cancellationToken);
        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken) => inner.WriteAsync(buffer, offset, cancellationToken);
        public override void SetLength(long length) => inner.SetLength(length);
        public override void PunchHole(long offset, long length) => inner.PunchHole(offset, length);
        public override bool ReserveSpace(long offset, long length) => inner.ReserveSpace(offset, length);

        protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
        {
            if (FailFlushes) throw new IOException("Input/output error", 5);
            return inner.FlushAsync(cancellationToken);
        }

        protected override void Dispose(bool disposing)
        {
            base.Dispose(disposing);
            if (disposing) inner.Dispose();
        }
    }
}
