using System.Buffers.Binary;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class ImageHostIsolationTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task A_failing_image_does_not_affect_another_image_in_the_same_host()
    {
        var bad = _dir.File("bad.qcow2");
        var good = _dir.File("good.qcow2");
        ImageCreator.Create(bad, new Qcow2CreateOptions { Size = 16 << 20 });
        ImageCreator.Create(good, new Qcow2CreateOptions { Size = 16 << 20 });
        QemuTools.QemuIo("-c", "write -P 0x11 0 64k", bad).EnsureSuccess();
        // Damage: point L1 entry 0 of the bad image at a misaligned "L2 table".
        var bytes = await File.ReadAllBytesAsync(bad);
        long l1 = (long)BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(40));
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan((int)l1), 0x8000000000000200UL);
        await File.WriteAllBytesAsync(bad, bytes);

        await using var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        await using var badImage = await host.OpenAsync(bad);
        await using var goodImage = await host.OpenAsync(good);
        var pattern = Enumerable.Repeat((byte)0x77, 65536).ToArray();

        await Assert.ThrowsAnyAsync<IOException>(async () => await badImage.WriteAsync(0, new byte[4096]));
        await Assert.ThrowsAnyAsync<IOException>(async () => await badImage.ReadAsync(0, new byte[4096]));

        await goodImage.WriteAsync(0, pattern);
        await goodImage.FlushAsync();
        var back = new byte[65536];
        await goodImage.ReadAsync(0, back);
        Assert.Equal(pattern, back);
        await goodImage.DisposeAsync();
        QemuTools.AssertCheckClean(good);
    }

    [Theory]
    [InlineData(1)] // the metadata map and the refcount state both read the refcount table: the first read fails
    [InlineData(2)] // or the second
    public async Task A_write_open_that_fails_after_opening_its_files_closes_them_and_the_image_opens_later(int failingRead)
    {
        var path = _dir.File("flaky.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 16 << 20 });
        long refcountTable = (long)BinaryPrimitives.ReadUInt64BigEndian((await File.ReadAllBytesAsync(path)).AsSpan(48));
        int opened = 0, closed = 0, tableReads = 0;
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, w) =>
            {
                Interlocked.Increment(ref opened);
                return new FailingReadDevice(FileBlockDevice.Open(p, w), refcountTable,
                    () => Interlocked.Increment(ref tableReads) == failingRead, () => Interlocked.Increment(ref closed));
            },
        };

        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            // Both readers of the refcount table run after the read side has opened the file.
            var error = await Assert.ThrowsAnyAsync<IOException>(() => host.OpenAsync(path, options));
            Assert.Contains("injected", error.Message);
            Assert.True(opened > 0);
            Assert.Equal(opened, Volatile.Read(ref closed));
            await using var image = await host.OpenAsync(path);
            await image.WriteAsync(0, new byte[4096]);
        }
        QemuTools.AssertCheckClean(path);
    }

    /// <summary>Fails the read at <paramref name="failAt"/> that <paramref name="fail"/> picks (every read there asks it).</summary>
    private sealed class FailingReadDevice(IBlockDevice inner, long failAt, Func<bool> fail, Action onDispose) : DelegatingDevice(inner)
    {
        protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken) =>
            offset == failAt && fail()
                ? ValueTask.FromException<int>(new IOException($"injected read error at {offset}"))
                : base.ReadCoreAsync(buffer, offset, cancellationToken);

        // The test sees every close the engine makes.
        protected override void Dispose(bool disposing)
        {
            if (disposing) onDispose();
            base.Dispose(disposing);
        }
    }
}
