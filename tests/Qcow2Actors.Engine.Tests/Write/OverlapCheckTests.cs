using System.Buffers.Binary;
using System.Text.Json;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class OverlapCheckTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task A_write_that_would_land_on_an_L2_table_with_a_lying_refcount_marks_the_image_corrupt_and_destroys_nothing()
    {
        var path = _dir.File("lie.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 64 << 20 });
        QemuTools.QemuIo("-c", "write -P 0x5a 0 64k", path).EnsureSuccess();

        // Zero the refcount of the L2 table (16-bit refcounts, 64 KiB clusters, one refcount block).
        var bytes = await File.ReadAllBytesAsync(path);
        long l1 = (long)BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(40));
        long l2 = (long)(BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan((int)l1)) & 0x00FFFFFFFFFFFE00UL);
        long reftable = (long)BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(48));
        long block = (long)BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan((int)reftable));
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan((int)(block + (l2 >> 16) * 2)), 0);
        await File.WriteAllBytesAsync(path, bytes);

        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            var image = await host.OpenAsync(path);
            // The allocator believes the L2 table's cluster is free and hands it out for new data.
            var ex = await Assert.ThrowsAsync<Qcow2ImageCorruptException>(async () => await image.WriteAsync(1 << 20, new byte[65536]));
            Assert.Contains("corrupt", ex.Message);
            Assert.Contains("L2 table", ex.Message);
            Assert.True(image.IsReadOnly);
            await Assert.ThrowsAsync<IOException>(async () => await image.WriteAsync(0, new byte[512]));
            await image.DisposeAsync();
        }

        var info = JsonDocument.Parse(QemuTools.QemuImg("info", "--output=json", path).EnsureSuccess().StdOut).RootElement;
        Assert.True(info.GetProperty("format-specific").GetProperty("data").GetProperty("corrupt").GetBoolean());
        var repaired = QemuTools.QemuImg("check", "-r", "all", path);
        Assert.True(repaired.ExitCode == 0, repaired.StdOut + repaired.StdErr);
        QemuTools.QemuIo("-c", "read -P 0x5a 0 64k", path).EnsureSuccess();
    }
}
