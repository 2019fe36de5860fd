using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>A fact that needs qemu's and libnbd's tools and a directory on a filesystem that takes O_DIRECT.</summary>
public sealed class ServeDirectTheoryAttribute : TheoryAttribute
{
    public ServeDirectTheoryAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io", "nbdinfo") ?? DirectIoDirectory.SkipReason; }
}

/// <summary><c>q2a serve --cache=none</c>: the image is opened with O_DIRECT and ends as qemu-io would leave it.</summary>
public sealed class ServeCacheInteropTests : IDisposable
{
    private const long MiB = 1024 * 1024;
    private readonly Lazy<string> _dir = new(DirectIoDirectory.Create);

    public void Dispose()
    {
        if (_dir.IsValueCreated) Directory.Delete(_dir.Value, recursive: true);
    }

    [ServeDirectTheory]
    [InlineData("cluster_size=65536", 21, 512)]
    [InlineData("cluster_size=512", 22, 1)] // small clusters and byte-granular guest writes: partial sectors everywhere
    public async Task Writes_served_with_cache_none_leave_what_qemu_io_leaves_on_a_copy(string options, int seed, int align)
    {
        string img = Path.Combine(_dir.Value, "served.qcow2"), copy = Path.Combine(_dir.Value, "copy.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", options, img, "16M");
        Io(img, RandomWrites(seed + 100, 16 * MiB, 20));
        File.Copy(img, copy);
        var writes = RandomWrites(seed, 16 * MiB, 120, maxLength: 96 * 1024, align: align);
        writes.Insert(60, "flush");
        Io(copy, writes);

        using (var server = await ServeProcess.StartAsync(1, "--port", "0", "--cache=none", img))
        {
            Assert.True(OpenedDirect(server.Pid, img), $"q2a serve --cache=none holds no O_DIRECT descriptor on {img}");
            Io(server.Uri, writes, format: "raw");
            Assert.Equal(0, server.Stop());
        }

        var check = QemuTools.QemuImg("check", img);
        Assert.True(check.ExitCode == 0, $"qemu-img check: exit {check.ExitCode}\n{check.StdOut}{check.StdErr}");
        Assert.Contains("No errors were found on the image.", check.StdOut);
        var compare = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "qcow2", copy, img);
        Assert.True(compare.ExitCode == 0, compare.StdOut + compare.StdErr);
    }

    /// <summary>Whether process <paramref name="pid"/> has <paramref name="path"/> open with O_DIRECT (fdinfo flags are octal).</summary>
    private static bool OpenedDirect(int pid, string path)
    {
        const int ODirect = 0x4000;
        foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(fd).LinkTarget;
            }
            catch (IOException)
            {
                continue;
            }
            if (target != path) continue;
            var flags = File.ReadLines($"/proc/{pid}/fdinfo/{Path.GetFileName(fd)}").First(l => l.StartsWith("flags:", StringComparison.Ordinal));
            if ((Convert.ToInt32(flags["flags:".Length..].Trim(), 8) & ODirect) != 0) return true;
        }
        return false;
    }
}
