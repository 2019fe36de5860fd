using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Image and journal on a filesystem that fills up (a small tmpfs): ENOSPC reaches the writer
/// as a per-request error, the image stays writable (the journal's space was reserved ahead,
/// so no commit meets the full disk), and writing resumes once space is freed.
/// Mounting needs root: as root (CI runs as root) the test mounts its own tmpfs; without root it
/// fails under CI=true and returns without running elsewhere.
/// </summary>
public sealed class FullDiskTests(ITestOutputHelper output) : IDisposable
{
    private const int ClusterSize = 65536;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task A_full_filesystem_fails_the_write_with_ENOSPC_keeps_the_image_writable_and_writing_resumes_once_space_is_freed()
    {
        if (Environment.UserName != "root" && !IsRoot())
        {
            Assert.False(QemuTools.IsCi, "mounting a tmpfs needs root, and CI=true asks for every test to run");
            return;
        }
        var mount = Path.Combine(_dir.Path, "small");
        Directory.CreateDirectory(mount);
        Run("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mount);
        try
        {
            await RunOnFullDiskAsync(mount);
        }
        finally
        {
            Run("umount", mount);
        }
    }

    private async Task RunOnFullDiskAsync(string mount)
    {
        var path = Path.Combine(mount, "disk.qcow2");
        var filler = Path.Combine(mount, "filler");
        var model = new byte[64 << 20];
        var faults = new System.Collections.Concurrent.ConcurrentQueue<Qcow2ImageFault>();
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = ClusterSize });
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, OnFault = faults.Enqueue }))
        {
            await WriteAsync(image, model, 0, 8 << 20, 0x11);
            await image.FlushAsync();

            long filled = Fill(filler);
            output.WriteLine($"filler took {filled} bytes");
            var error = await Assert.ThrowsAsync<Qcow2NoSpaceException>(async () => await image.WriteAsync(16 << 20, Pattern(1 << 20, 0x22)));
            output.WriteLine(error.Message);
            Assert.Equal(28, error.HResult);
            Assert.False(image.IsReadOnly, $"the image turned read-only: {image.ReadOnlyReason}");
            // The embedder hears of it as it happens: a no-space fault naming the image, nothing else.
            var fault = Assert.Single(faults);
            Assert.Equal(Qcow2ImageFaultKind.NoSpace, fault.Kind);
            Assert.Equal(Path.GetFullPath(path), Path.GetFullPath(fault.Path));

            // Clusters the image already has take no new space: overwriting still works. Discarding
            // 96 clusters journals a few pages of records, which land in the journal's reserved space.
            await WriteAsync(image, model, 1 << 20, 1 << 20, 0x33);
            await image.DiscardAsync(2 << 20, 6 << 20);
            Array.Clear(model, 2 << 20, 6 << 20);
            await image.FlushAsync();
            Assert.False(image.IsReadOnly, $"the image turned read-only: {image.ReadOnlyReason}");

            File.Delete(filler);
            await WriteAsync(image, model, 16 << 20, 1 << 20, 0x22);
            await WriteAsync(image, model, 32 << 20, 2 << 20, 0x44);
            await image.FlushAsync();
            var back = new byte[model.Length];
            await image.ReadAsync(0, back);
            Assert.True(model.AsSpan().SequenceEqual(back), "read-back differs from what was written");
        }
        Assert.False(File.Exists(path + ".journal"), "the journal is still there after a clean close");
        QemuTools.AssertCheckClean(path);
        QemuTools.AssertSameContent(path, model, _dir.Path);
    }

    private static async Task WriteAsync(Qcow2Image image, byte[] model, int offset, int length, byte value)
    {
        var data = Pattern(length, value);
        await image.WriteAsync(offset, data);
        data.CopyTo(model, offset);
    }

    private static byte[] Pattern(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    /// <summary>Writes <paramref name="path"/> until the filesystem is full; returns its size.</summary>
    private static long Fill(string path)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.None);
        var block = new byte[4096];
        long written = 0;
        try
        {
            while (true)
            {
                stream.Write(block);
                written += block.Length;
            }
        }
        catch (IOException ex) when (Qcow2NoSpaceException.IsNoSpace(ex))
        {
            return written;
        }
    }

    private static bool IsRoot() => Run("id", "-u").Trim() == "0";

    private static string Run(string tool, params string[] args)
    {
        var r = QemuTools.Run(tool, args);
        Assert.True(r.ExitCode == 0, $"{tool} {string.Join(' ', args)}: {r.StdErr}");
        return r.StdOut;
    }
}
