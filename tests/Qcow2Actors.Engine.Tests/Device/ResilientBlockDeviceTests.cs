using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

public class ResilientBlockDeviceTests
{
    private static readonly ResilientDeviceOptions Fast = new() { MaxRetryAttempts = 3, BaseDelay = TimeSpan.Zero };

    private static FaultyDevice Faulty() => new(new MemoryBlockDevice([10, 20, 30, 40]));

    [Fact]
    public void Transient_read_errors_are_retried_until_the_read_succeeds()
    {
        var faulty = Faulty();
        faulty.ReadFaults.Enqueue(new IOException("EIO"));
        faulty.ReadFaults.Enqueue(new IOException("EIO"));
        using var dev = new ResilientBlockDevice(faulty, Fast);
        var buf = new byte[4];
        Assert.Equal(4, dev.Read(buf, 0));
        Assert.Equal(new byte[] { 10, 20, 30, 40 }, buf);
        Assert.Equal(3, faulty.Reads);
    }

    [Fact]
    public async Task Transient_async_read_errors_are_retried_until_the_read_succeeds()
    {
        var faulty = Faulty();
        faulty.ReadFaults.Enqueue(new IOException("EIO"));
        var retries = new List<int>();
        using var dev = new ResilientBlockDevice(faulty, Fast with { OnRetry = (_, n) => retries.Add(n) });
        var buf = new byte[2];
        Assert.Equal(2, await dev.ReadAsync(buf, 2));
        Assert.Equal(new byte[] { 30, 40 }, buf);
        Assert.Equal([0], retries);
    }

    [Fact]
    public void A_read_that_keeps_failing_surfaces_the_last_error_after_the_retry_budget()
    {
        var faulty = Faulty();
        for (var i = 0; i < 10; i++) faulty.ReadFaults.Enqueue(new IOException($"EIO {i}"));
        using var dev = new ResilientBlockDevice(faulty, Fast);
        var e = Assert.Throws<IOException>(() => dev.Read(new byte[1], 0));
        Assert.Equal("EIO 3", e.Message);
        Assert.Equal(4, faulty.Reads);
    }

    [Fact]
    public void Errors_that_waiting_cannot_fix_are_not_retried()
    {
        var faulty = Faulty();
        faulty.ReadFaults.Enqueue(new UnauthorizedAccessException("EACCES"));
        using var dev = new ResilientBlockDevice(faulty, Fast);
        Assert.Throws<UnauthorizedAccessException>(() => dev.Read(new byte[1], 0));
        Assert.Equal(1, faulty.Reads);
        Assert.False(ResilientBlockDevice.IsTransient(new FileNotFoundException()));
        Assert.True(ResilientBlockDevice.IsTransient(new IOException()));
    }

    [Fact]
    public void A_failed_flush_is_never_retried_and_surfaces_unchanged()
    {
        var faulty = Faulty();
        var fsyncError = new IOException("fdatasync failed: errno 5");
        faulty.FlushFault = fsyncError;
        using var dev = new ResilientBlockDevice(faulty, Fast);
        var e = Assert.Throws<IOException>(dev.Flush);
        Assert.Same(fsyncError, e);
        Assert.Equal(1, faulty.Flushes);
    }

    [Fact]
    public async Task A_failed_write_is_never_retried()
    {
        var faulty = Faulty();
        faulty.WriteFault = new IOException("ENOSPC");
        using var dev = new ResilientBlockDevice(faulty, Fast);
        Assert.Throws<IOException>(() => dev.Write([1], 0));
        await Assert.ThrowsAsync<IOException>(async () => await dev.WriteAsync(new byte[] { 1 }, 0));
        Assert.Equal(2, faulty.Writes);
    }

    [Fact]
    public void Open_retries_a_transient_failure_and_wraps_the_device()
    {
        var attempts = 0;
        using var dev = ResilientBlockDevice.Open(() =>
        {
            if (++attempts < 3) throw new IOException("EAGAIN");
            return new MemoryBlockDevice([5]);
        }, Fast);
        Assert.Equal(3, attempts);
        Assert.Equal(1, dev.Length);
    }

    [Fact]
    public void Opening_a_missing_file_fails_at_once()
    {
        using var dir = new TempDir();
        Assert.Throws<FileNotFoundException>(() => ResilientBlockDevice.OpenFile(dir.File("absent"), writable: false, Fast));
    }

    [Fact]
    public void OpenFile_reads_a_real_file_and_flushes_through()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("f"), [1, 2, 3]);
        using var dev = ResilientBlockDevice.OpenFile(dir.File("f"), writable: true, Fast);
        dev.Write([4], 3);
        dev.Flush();
        var buf = new byte[4];
        Assert.Equal(4, dev.Read(buf, 0));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, buf);
        DirectorySync.Fsync(dir.Path);
        DirectorySync.FsyncParentOf(dir.File("f"));
    }

    [Fact]
    public async Task A_read_whose_first_attempt_fails_is_retried_by_the_device_for_an_async_caller_too()
    {
        // The image's read path calls ReadAsync and nothing else: the retry must happen in here.
        var faulty = Faulty();
        faulty.ReadFaults.Enqueue(new IOException("EIO 0"));
        faulty.ReadFaults.Enqueue(new IOException("EIO 1"));
        var retries = new List<int>();
        using var dev = new ResilientBlockDevice(faulty, Fast with { OnRetry = (_, n) => retries.Add(n) });
        var buf = new byte[4];
        Assert.Equal(4, await dev.ReadAsync(buf, 0));
        Assert.Equal(new byte[] { 10, 20, 30, 40 }, buf);
        Assert.Equal(3, faulty.Reads);
        Assert.Equal([0, 1], retries);
    }
}
