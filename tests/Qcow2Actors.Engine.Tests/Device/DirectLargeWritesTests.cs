using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

public sealed class DirectLargeWritesTests : DirectIoFileFixture
{
    [DirectIoFact]
    public void Only_large_whole_sector_writes_take_the_direct_path()
    {
        var path = NewFile(4 << 20);
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        using var direct = new DirectLargeWrites(file, path);
        var big = new byte[DirectLargeWrites.Threshold];
        Assert.False(direct.TryWrite(big.AsSpan(0, DirectLargeWrites.Threshold - 4096), 0));
        Assert.False(direct.TryWrite(big, 100));
        Assert.False(direct.TryWrite(big.AsSpan(0, DirectLargeWrites.Threshold - 1), 0));
        Assert.True(direct.TryWrite(big, 1 << 20));
        // Memory that is not sector-aligned is bounced, not refused.
        var padded = new byte[DirectLargeWrites.Threshold + 1];
        Assert.True(direct.TryWrite(padded.AsSpan(1), 2 << 20));
    }

    [DirectIoFact]
    public void Buffered_and_direct_writes_mixed_read_back_like_a_memory_device()
    {
        var path = NewFile(3 << 20);
        var model = new MemoryBlockDevice(File.ReadAllBytes(path));
        var random = new Random(11);
        using (var device = FileBlockDevice.Open(path, writable: true))
        {
            for (int i = 0; i < 200; i++)
            {
                // Large sector-aligned writes (direct) over ranges that small buffered writes keep cached and dirty.
                bool large = random.Next(0, 3) == 0;
                long offset = large ? random.Next(0, 12) * 256L * 1024 : random.Next(0, 3 << 20);
                int length = large ? random.Next(1, 5) * 256 * 1024 : random.Next(1, 9000);
                var data = new byte[length + 1];
                random.NextBytes(data);
                var source = random.Next(0, 2) == 0 ? data.AsMemory(0, length) : data.AsMemory(1, length);
                device.Write(source.Span, offset);
                model.Write(source.Span, offset);
                // Read through the page cache right after: a direct write must not leave stale cached pages.
                var back = new byte[length];
                Assert.Equal(length, device.Read(back, offset));
                Assert.True(source.Span.SequenceEqual(back), $"write {i} at {offset} (+{length}) read back other bytes");
            }
            device.Flush();
            Assert.Equal(model.Length, device.Length);
        }
        Assert.True(model.ToArray().AsSpan().SequenceEqual(File.ReadAllBytes(path)));
    }

    [DirectIoFact]
    public void A_large_write_lands_in_the_file_the_device_opened_even_after_its_path_names_another()
    {
        var path = NewFile(2 << 20);
        var moved = path + ".moved";
        var original = File.ReadAllBytes(path);
        var data = new byte[DirectLargeWrites.Threshold];
        new Random(3).NextBytes(data);
        using (var device = FileBlockDevice.Open(path, writable: true))
        {
            // The image is renamed and another file takes its name while it is open (a careless rotation, a copy put back).
            File.Move(path, moved);
            var stranger = new byte[2 << 20];
            File.WriteAllBytes(path, stranger);
            device.Write(data, 1 << 20); // large and whole sectors: the direct handle, opened only now
            device.Flush();
            Assert.True(File.ReadAllBytes(path).AsSpan().SequenceEqual(stranger), "the write reached the file now at the path");
        }
        data.CopyTo(original.AsSpan(1 << 20));
        Assert.True(File.ReadAllBytes(moved).AsSpan().SequenceEqual(original), "the opened file lacks the write");
    }
}
