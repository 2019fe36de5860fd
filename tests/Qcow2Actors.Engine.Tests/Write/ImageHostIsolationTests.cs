using System.Buffers.Binary;
using Qcow2Actors.Engine.Create;
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
}
