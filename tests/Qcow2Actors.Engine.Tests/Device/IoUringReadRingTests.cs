using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>Runs only where this system can make an io_uring (Linux, not refused by seccomp or sysctl).</summary>
public sealed class IoUringFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> SkipReasonValue = new(() =>
    {
        using var ring = IoUringReadRing.Create(out var why);
        return ring is null ? $"no io_uring here: {why}" : null;
    });

    public IoUringFactAttribute() { Skip = SkipReasonValue.Value; }
}

/// <summary>
/// <see cref="IoUringReadRing"/>: the bytes a started read delivers are the file's, the end of the file
/// shortens a read, failures come back as <see cref="IOException"/> naming the file, reads in flight
/// survive the device's disposal and are all answered before the ring's own disposal returns, and
/// without a ring a device says no and reads the ordinary way.
/// </summary>
public sealed class IoUringReadRingTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private string NewFile(int length, int seed)
    {
        var path = _dir.File($"f{seed}");
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static IoUringReadRing NewRing() =>
        IoUringReadRing.Create(out var why) ?? throw new InvalidOperationException($"no ring: {why}");

    [IoUringFact]
    public async Task Reads_at_odd_offsets_and_lengths_deliver_the_files_bytes_into_the_buffer_at_its_index()
    {
        var path = NewFile(3 * 1024 * 1024 + 77, 1);
        var expected = File.ReadAllBytes(path);
        using var ring = NewRing();
        using var handle = File.OpenHandle(path);
        var random = new Random(2);
        var reads = new List<(byte[] Buffer, int Index, int Count, long Offset, ReadCompletion Done)>();
        for (int i = 0; i < 200; i++)
        {
            int count = random.Next(1, 70_000);
            long offset = random.Next(0, expected.Length - count);
            int index = random.Next(0, 33);
            var buffer = new byte[index + count + 5];
            var done = new ReadCompletion();
            Assert.True(ring.TryStartRead(handle, path, buffer, index, count, offset, done));
            reads.Add((buffer, index, count, offset, done));
        }
        foreach (var (buffer, index, count, offset, done) in reads)
        {
            var (bytes, error) = await done.Task.WaitAsync(Bound);
            Assert.Null(error);
            Assert.Equal(count, bytes);
            Assert.Equal(expected.AsSpan((int)offset, count).ToArray(), buffer.AsSpan(index, count).ToArray());
            // Nothing outside the asked range is written.
            Assert.All(buffer.AsSpan(0, index).ToArray(), b => Assert.Equal(0, b));
            Assert.All(buffer.AsSpan(index + count).ToArray(), b => Assert.Equal(0, b));
            Assert.Equal(1, done.Calls);
        }
    }

    [IoUringFact]
    public async Task A_read_across_the_end_of_the_file_is_short_and_one_past_it_reads_nothing()
    {
        var path = NewFile(10_000, 3);
        var expected = File.ReadAllBytes(path);
        using var ring = NewRing();
        using var handle = File.OpenHandle(path);

        var across = new byte[4096];
        var acrossDone = new ReadCompletion();
        Assert.True(ring.TryStartRead(handle, path, across, 0, 4096, 8192, acrossDone));
        var (bytes, error) = await acrossDone.Task.WaitAsync(Bound);
        Assert.Null(error);
        Assert.Equal(10_000 - 8192, bytes);
        Assert.Equal(expected.AsSpan(8192).ToArray(), across.AsSpan(0, bytes).ToArray());

        var past = new byte[512];
        var pastDone = new ReadCompletion();
        Assert.True(ring.TryStartRead(handle, path, past, 0, 512, 20_000, pastDone));
        Assert.Equal(0, (await pastDone.Task.WaitAsync(Bound)).Bytes);
    }

    [IoUringFact]
    public async Task A_read_the_kernel_refuses_ends_with_an_IOException_naming_the_file()
    {
        var path = NewFile(8192, 4);
        using var ring = NewRing();
        // A write-only descriptor cannot be read (EBADF): a real failure, from the kernel, per read.
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
        var done = new ReadCompletion();
        Assert.True(ring.TryStartRead(handle, path, new byte[4096], 0, 4096, 0, done));
        var (_, error) = await done.Task.WaitAsync(Bound);
        var io = Assert.IsType<IOException>(error);
        Assert.Contains(path, io.Message);
    }

    [IoUringFact]
    public async Task A_device_disposed_with_reads_in_flight_still_answers_them_with_its_bytes_then_closes_its_file()
    {
        var path = NewFile(1024 * 1024, 5);
        var expected = File.ReadAllBytes(path);
        using var ring = NewRing();
        var device = FileBlockDevice.Open(path, writable: false, ring);
        var reads = new List<(byte[] Buffer, long Offset, ReadCompletion Done)>();
        for (int i = 0; i < 64; i++)
        {
            var buffer = new byte[4096];
            var done = new ReadCompletion();
            Assert.True(((IAsyncHostRead)device).TryStartRead(buffer, 0, 4096, i * 16_384L, done));
            reads.Add((buffer, i * 16_384L, done));
        }
        device.Dispose();
        foreach (var (buffer, offset, done) in reads)
        {
            var (bytes, error) = await done.Task.WaitAsync(Bound);
            Assert.Null(error);
            Assert.Equal(4096, bytes);
            Assert.Equal(expected.AsSpan((int)offset, 4096).ToArray(), buffer);
        }
        // Disposed: no new read starts, the ordinary path reports the closed device.
        Assert.False(((IAsyncHostRead)device).TryStartRead(new byte[4096], 0, 4096, 0, new ReadCompletion()));
    }

    [IoUringFact]
    public void Disposing_the_ring_answers_every_read_in_flight_before_it_returns_and_refuses_new_ones()
    {
        var path = NewFile(2 * 1024 * 1024, 6);
        var ring = NewRing();
        using var handle = File.OpenHandle(path);
        var done = new List<ReadCompletion>();
        for (int i = 0; i < IoUringReadRing.Capacity; i++)
        {
            var completion = new ReadCompletion();
            if (!ring.TryStartRead(handle, path, new byte[8192], 0, 8192, i * 8192L, completion)) break;
            done.Add(completion);
        }
        Assert.NotEmpty(done);
        ring.Dispose();
        Assert.All(done, d =>
        {
            Assert.True(d.Task.IsCompleted);
            Assert.Equal(1, d.Calls);
        });
        Assert.False(ring.TryStartRead(handle, path, new byte[8192], 0, 8192, 0, new ReadCompletion()));
    }

    [Fact]
    public void A_ring_that_cannot_be_set_up_is_null_with_a_reason()
    {
        // io_uring_setup refuses zero entries (EINVAL); elsewhere there is no io_uring at all.
        var ring = IoUringReadRing.Create(0, out var why);
        Assert.Null(ring);
        Assert.False(string.IsNullOrEmpty(why));
    }

    [Fact]
    public async Task Without_a_ring_a_device_declines_to_start_reads_and_its_ordinary_reads_still_work()
    {
        var path = NewFile(50_000, 7);
        var expected = File.ReadAllBytes(path);
        using var device = FileBlockDevice.Open(path, writable: false, ring: null);
        var done = new ReadCompletion();
        Assert.False(((IAsyncHostRead)device).TryStartRead(new byte[4096], 0, 4096, 0, done));
        Assert.Equal(0, done.Calls);
        var buffer = new byte[5000];
        Assert.Equal(5000, await device.ReadAsync(buffer, 12_345));
        Assert.Equal(expected.AsSpan(12_345, 5000).ToArray(), buffer);
    }
}
