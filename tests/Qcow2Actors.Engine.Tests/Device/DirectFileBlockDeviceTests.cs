using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

public sealed class DirectFileBlockDeviceTests : DirectIoFileFixture
{
    [DirectIoFact]
    public void An_unaligned_write_sequence_leaves_what_it_leaves_on_a_memory_device()
    {
        var path = NewFile(10_000);
        var model = new MemoryBlockDevice(File.ReadAllBytes(path));
        var direct = DirectFileBlockDevice.Open(path, writable: true);
        Assert.Contains(direct.SectorSize, new[] { 512, 1024, 2048, 4096 });
        var random = new Random(7);
        for (int i = 0; i < 300; i++)
        {
            long offset = random.Next(0, 3) == 0 ? random.Next(0, 64) * 512L : random.Next(0, 1_400_000);
            // Mostly small metadata-like writes, some larger than one bounce buffer (1 MiB).
            int length = random.Next(0, 10) == 0 ? random.Next(1, 1_200_000) : random.Next(1, 9000);
            var data = new byte[length];
            random.NextBytes(data);
            // Unaligned memory too: a slice one byte into the array.
            var source = random.Next(0, 2) == 0 ? data.AsSpan() : Pad(data).AsSpan(1, length);
            direct.Write(source, offset);
            model.Write(data, offset);
            if (i % 50 == 49)
            {
                long length2 = random.Next(5000, 1_500_000);
                direct.SetLength(length2);
                model.SetLength(length2);
            }
            Assert.Equal(model.Length, direct.Length);
        }
        direct.Flush();
        var expected = model.ToArray();
        // Padded to the sector while open, exact once closed.
        Assert.InRange(new FileInfo(path).Length, expected.Length, expected.Length + direct.SectorSize - 1);
        // Read back through the device (unaligned reads) and through the page cache.
        var back = new byte[expected.Length + 100];
        Assert.Equal(expected.Length, direct.Read(back.AsSpan(0, back.Length), 0));
        Assert.True(expected.AsSpan().SequenceEqual(back.AsSpan(0, expected.Length)));
        var piece = new byte[777];
        Assert.Equal(777, direct.Read(piece, 12_345));
        Assert.True(expected.AsSpan(12_345, 777).SequenceEqual(piece));
        direct.Dispose();
        Assert.True(expected.AsSpan().SequenceEqual(File.ReadAllBytes(path)));
    }

    [DirectIoFact]
    public void A_write_that_ends_mid_sector_past_the_end_keeps_the_space_reserved_beyond_it()
    {
        var path = NewFile(4096);
        using (var direct = DirectFileBlockDevice.Open(path, writable: true))
        {
            if (!direct.ReserveSpace(1 << 20, 1 << 20)) return; // the filesystem has no fallocate
            long reserved = AllocatedBytes(path);
            Assert.True(reserved >= (1 << 20), $"{reserved} bytes allocated after reserving 1 MiB");
            direct.Write(new byte[100], 4096);
            direct.Flush();
            Assert.Equal(4196, direct.Length);
            Assert.True(AllocatedBytes(path) >= reserved, "the mid-sector extension freed the reservation");
        }
        Assert.Equal(4196, new FileInfo(path).Length);
    }

    private static long AllocatedBytes(string path)
    {
        var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%b %B", path])
        {
            RedirectStandardOutput = true,
        })!;
        var parts = stat.StandardOutput.ReadToEnd().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        stat.WaitForExit();
        return long.Parse(parts[0]) * long.Parse(parts[1]);
    }

    private static byte[] Pad(byte[] data)
    {
        var padded = new byte[data.Length + 1];
        data.CopyTo(padded, 1);
        return padded;
    }

    [DirectIoFact]
    public async Task Concurrent_partial_writes_to_one_sector_keep_each_others_bytes()
    {
        var path = NewFile(8192);
        using var direct = DirectFileBlockDevice.Open(path, writable: true);
        const int Writers = 8, Rounds = 200;
        // Each writer owns 8 bytes of the first sector and rewrites them over and over; a read-modify-write
        // that raced another would put back that writer's old bytes.
        var tasks = Enumerable.Range(0, Writers).Select(w => Task.Run(() =>
        {
            var slot = new byte[8];
            for (int r = 1; r <= Rounds; r++)
            {
                slot.AsSpan().Fill((byte)r);
                direct.Write(slot, 100 + w * 8);
            }
        })).ToArray();
        // A whole-sector writer beside them, on the next sector, must not disturb them either.
        var whole = Task.Run(() =>
        {
            var sector = new byte[direct.SectorSize];
            for (int r = 0; r < Rounds; r++) direct.Write(sector, direct.SectorSize);
        });
        await Task.WhenAll([.. tasks, whole]);
        var back = new byte[Writers * 8];
        direct.Read(back, 100);
        Assert.All(back, b => Assert.Equal((byte)Rounds, b));
    }

    [DirectIoFact]
    public async Task Async_and_sync_reads_of_aligned_and_unaligned_ranges_agree_with_the_file()
    {
        var path = NewFile(70_000);
        var expected = File.ReadAllBytes(path);
        using var direct = DirectFileBlockDevice.Open(path, writable: false);
        Assert.True(direct.IsReadOnly);
        var aligned = new byte[8192];
        Assert.Equal(8192, await direct.ReadAsync(aligned, 4096));
        Assert.True(expected.AsSpan(4096, 8192).SequenceEqual(aligned));
        var tail = new byte[1000];
        Assert.Equal(70_000 - 69_500, direct.Read(tail, 69_500));
        Assert.True(expected.AsSpan(69_500).SequenceEqual(tail.AsSpan(0, 500)));
        Assert.Equal(0, direct.Read(tail, 80_000));
        Assert.ThrowsAny<IOException>(() => direct.Write(new byte[1], 0));
    }

    [Fact]
    public void A_filesystem_that_refuses_O_DIRECT_is_one_error_naming_the_path_and_cache_writeback()
    {
        // procfs has no direct I/O: the same refusal a tmpfs without O_DIRECT support gives.
        const string path = "/proc/self/status";
        var error = Assert.ThrowsAny<IOException>(() => DirectFileBlockDevice.Open(path, writable: false));
        Assert.Contains(path, error.Message);
        Assert.Contains("use cache=writeback", error.Message);
        Assert.DoesNotContain('\n', error.Message);
        // Not a transient error: opening through the retry decorator fails at once, not after backing off.
        var attempts = 0;
        Assert.ThrowsAny<IOException>(() => ResilientBlockDevice.Open(() =>
        {
            attempts++;
            return DirectFileBlockDevice.Open(path, writable: false);
        }));
        Assert.Equal(1, attempts);
    }
}
