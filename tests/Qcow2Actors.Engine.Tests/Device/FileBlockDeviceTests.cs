using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// <see cref="FileBlockDevice"/>'s small-read paths (page-cache reads on the caller's thread, io_uring reads) use a
/// second handle: it is on the file the device opened, whatever its path names later, and it closes with the device.
/// </summary>
public sealed class FileBlockDeviceTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private (string Path, byte[] Bytes) NewFile(int length)
    {
        var path = _dir.File($"f{length}");
        var bytes = new byte[length];
        new Random(length).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
        return (path, bytes);
    }

    /// <summary>This process's descriptors on the file at <paramref name="path"/> (Linux), matched by the name the kernel gives it.</summary>
    private static int OpenDescriptors(string path)
    {
        string name;
        using (var probe = File.OpenHandle(path)) name = new FileInfo($"/proc/self/fd/{probe.DangerousGetHandle()}").LinkTarget!;
        return Directory.GetFiles("/proc/self/fd").Count(fd =>
        {
            try { return new FileInfo(fd).LinkTarget == name; }
            catch (IOException) { return false; } // closed while we looked
        });
    }

    [IoUringFact]
    public async Task Small_reads_return_the_opened_files_bytes_after_its_path_is_given_to_another_file()
    {
        var (path, bytes) = NewFile(1 << 20);
        var moved = path + ".moved";
        using var ring = IoUringReadRing.Create(out var why) ?? throw new InvalidOperationException(why);
        using var device = FileBlockDevice.Open(path, writable: false, ring);
        File.Move(path, moved);
        File.WriteAllBytes(path, new byte[1 << 20]);

        // Cached through the device's own handle, so the read on the caller's thread finds it in memory.
        var warm = new byte[64 * 1024];
        Assert.Equal(warm.Length, await device.ReadAsync(warm, 0));
        var now = new byte[4096];
        Assert.True(((INonBlockingRead)device).TryReadNow(now, 8192), "a cached page was not read without waiting");
        Assert.Equal(bytes.AsSpan(8192, 4096).ToArray(), now);

        var started = new byte[4096 + 7];
        var done = new ReadCompletion();
        Assert.True(((IAsyncHostRead)device).TryStartRead(started, 7, 4096, 512 * 1024, done));
        var (read, error) = await done.Task.WaitAsync(Bound);
        Assert.Null(error);
        Assert.Equal(4096, read);
        Assert.Equal(bytes.AsSpan(512 * 1024, 4096).ToArray(), started.AsSpan(7).ToArray());
    }

    [LinuxFact]
    public void Disposing_the_device_closes_its_second_handle_too()
    {
        var (path, _) = NewFile(256 * 1024);
        var device = FileBlockDevice.Open(path, writable: true);
        ((INonBlockingRead)device).TryReadNow(new byte[4096], 0); // opens the second handle
        Assert.True(OpenDescriptors(path) >= 2, "the small-read path did not open a handle of its own");
        device.Dispose();
        Assert.Equal(0, OpenDescriptors(path));
    }
}
