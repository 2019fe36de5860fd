using CsCheck;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// <see cref="Qcow2Image.AsStream"/> behaves as a fixed-size <see cref="MemoryStream"/> over the guest
/// disk: random read/write/seek sequences give the same results, positions and refusals as the model,
/// and what the stream holds is what qemu-img reads.
/// </summary>
public sealed class Qcow2ImageStreamTests : HostedImageTests
{
    private enum Op { Read, Write, SyncRead, SyncWrite, SeekBegin, SeekCurrent, SeekEnd, SetPosition, Flush }

    private sealed record Step(Op Op, long Value, int Length, byte Seed)
    {
        public override string ToString() => $"{Op}({Value},{Length})";
    }

    private const int DiskSize = 192 * 1024;

    // Offsets and lengths reach past the end of the disk, so the refusals are exercised too.
    private static readonly Gen<Step> Steps =
        from op in Gen.Enum<Op>()
        from value in Gen.Long[-4096, DiskSize + 8192]
        from length in Gen.Int[0, 40_000]
        from seed in Gen.Byte
        select new Step(op, value, length, seed);

    [QemuFact]
    public async Task Random_read_write_seek_sequences_match_a_fixed_size_memory_stream()
    {
        int run = 0;
        await Steps.Array[1, 40].SampleAsync(async steps =>
        {
            var path = Dir.File($"s{run++}.qcow2");
            await using (var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 4096 }))
            {
                await using var stream = image.AsStream();
                using var model = new MemoryStream(new byte[DiskSize], writable: true);
                foreach (var step in steps) await Apply(step, stream, model);
                var all = new byte[DiskSize];
                stream.Position = 0;
                await stream.ReadExactlyAsync(all);
                Assert.Equal(model.ToArray(), all);
                await stream.FlushAsync();
            }
            QemuTools.AssertCheckClean(path);
            File.Delete(path);
        }, iter: 20, threads: 1);
    }

    private static async Task Apply(Step step, Stream stream, MemoryStream model)
    {
        var data = new byte[step.Length];
        new Random(step.Seed).NextBytes(data);
        switch (step.Op)
        {
            case Op.Read:
            {
                var got = new byte[step.Length];
                var want = new byte[step.Length];
                int n = await stream.ReadAsync(got);
                int m = model.Read(want);
                Assert.Equal(m, n);
                Assert.Equal(want, got);
                break;
            }
            case Op.SyncRead:
            {
                var got = new byte[step.Length + 3];
                var want = new byte[step.Length + 3];
                Assert.Equal(model.Read(want, 3, step.Length), stream.Read(got, 3, step.Length));
                Assert.Equal(want, got);
                break;
            }
            case Op.Write:
                Same(() => model.Write(data), async () => await stream.WriteAsync(data));
                break;
            case Op.SyncWrite:
                Same(() => model.Write(data), () => { stream.Write(data.AsSpan()); return Task.CompletedTask; });
                break;
            case Op.SeekBegin:
                Same(() => model.Seek(step.Value, SeekOrigin.Begin), () => Task.FromResult(stream.Seek(step.Value, SeekOrigin.Begin)));
                break;
            case Op.SeekCurrent:
                Same(() => model.Seek(step.Value - DiskSize / 2, SeekOrigin.Current), () => Task.FromResult(stream.Seek(step.Value - DiskSize / 2, SeekOrigin.Current)));
                break;
            case Op.SeekEnd:
                Same(() => model.Seek(step.Value - DiskSize, SeekOrigin.End), () => Task.FromResult(stream.Seek(step.Value - DiskSize, SeekOrigin.End)));
                break;
            case Op.SetPosition:
                Same(() => model.Position = step.Value, () => { stream.Position = step.Value; return Task.CompletedTask; });
                break;
            case Op.Flush:
                await stream.FlushAsync();
                break;
        }
        Assert.Equal(model.Position, stream.Position);
        Assert.Equal(model.Length, stream.Length);

        // Both succeed the same way or both refuse with the same exception type.
        void Same(Action onModel, Func<Task> onStream)
        {
            var expected = Record.Exception(onModel);
            var actual = Record.Exception(() => onStream().GetAwaiter().GetResult());
            Assert.Equal(expected?.GetType(), actual?.GetType());
        }
    }

    [QemuFact]
    public async Task Copying_the_stream_gives_the_bytes_qemu_img_convert_writes()
    {
        var path = Dir.File("c.qcow2");
        await using (var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 3 << 20, ClusterSize = 65536 }))
        {
            var data = new byte[700_000];
            new Random(7).NextBytes(data);
            await image.WriteAsync(123_456, data);
            await image.WriteZeroesAsync(1 << 20, 65536);
            await image.WriteAsync((3 << 20) - 5000, data.AsMemory(0, 5000));
        }
        var raw = Dir.File("c.raw");
        QemuTools.QemuImg("convert", "-f", "qcow2", "-O", "raw", path, raw).EnsureSuccess();

        await using var reopened = await Qcow2Image.OpenAsync(path);
        await using var stream = reopened.AsStream();
        Assert.False(stream.CanWrite);
        using var copy = new MemoryStream();
        await stream.CopyToAsync(copy);
        Assert.Equal(await File.ReadAllBytesAsync(raw), copy.ToArray());
    }

    [Fact]
    public async Task A_write_past_the_end_is_refused_whole_naming_the_disk_size()
    {
        var path = Dir.File("e.qcow2");
        await using var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 65536 });
        await using var stream = image.AsStream();
        stream.Position = 65536 - 10;
        var e = await Assert.ThrowsAsync<NotSupportedException>(async () => await stream.WriteAsync(new byte[11]));
        Assert.Contains("past the end of the 65536-byte disk", e.Message);
        Assert.Equal(65536 - 10, stream.Position);
        var back = new byte[10];
        Assert.Equal(10, await stream.ReadAsync(back));
        Assert.Equal(new byte[10], back);
        Assert.Throws<NotSupportedException>(() => stream.SetLength(1 << 20));
    }

    [Fact]
    public async Task A_read_only_image_gives_a_stream_that_refuses_writes()
    {
        var path = Dir.File("r.qcow2");
        await (await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 65536 })).DisposeAsync();
        await using var image = await Qcow2Image.OpenAsync(path);
        await using var stream = image.AsStream();
        Assert.False(stream.CanWrite);
        var e = Assert.Throws<NotSupportedException>(() => stream.Write(new byte[1]));
        Assert.Contains("read-only", e.Message);
    }
}
