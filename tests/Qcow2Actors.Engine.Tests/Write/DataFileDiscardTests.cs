using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Discard on an image with an external data file, with qemu-io doing the same to a twin image
/// as the oracle: the discarded clusters read as zeros afterwards, the images compare equal,
/// both check clean, and the data file gives the discarded range back to the host.
/// </summary>
public sealed class DataFileDiscardTests : IDisposable
{
    private const int Size = 4 << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData("cluster_size=65536")]
    [InlineData("cluster_size=65536,extended_l2=on")]
    [InlineData("cluster_size=65536,data_file_raw=on")]
    public async Task Discarded_clusters_of_a_data_file_image_read_as_zeros_as_qemu_reads_them(string options)
    {
        var ours = Create("ours", options);
        var twin = Create("twin", options);

        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.OpenAsync(ours))
        {
            await image.WriteAsync(0, Enumerable.Repeat((byte)0xab, 1 << 20).ToArray());
            await image.FlushAsync();
            // Whole clusters 0..512K, and a range whose partial head and tail clusters stay as they are.
            await image.DiscardAsync(0, 512 << 10);
            await image.DiscardAsync((640 << 10) + 4096, (128 << 10) - 8192);
            var back = new byte[1 << 20];
            await image.ReadAsync(0, back);
            Assert.True(back.AsSpan(0, 512 << 10).IndexOfAnyExcept((byte)0) < 0, "discarded clusters still read data");
            Assert.True(back.AsSpan(512 << 10).IndexOfAnyExcept((byte)0xab) < 0, "data outside whole discarded clusters changed");
            await image.FlushAsync();
        }
        Qemu(twin, "write -P 0xab 0 1M", "discard 0 512k", $"discard {(640 << 10) + 4096} {(128 << 10) - 8192}");

        Qemu(ours, "read -P 0 0 512k", "read -P 0xab 512k 512k");
        QemuTools.AssertCheckClean(ours);
        QemuTools.AssertCheckClean(twin);
        var cmp = QemuTools.QemuImg("compare", ours, twin);
        Assert.True(cmp.ExitCode == 0, $"qemu-img compare: {cmp.StdOut}{cmp.StdErr}");
        // The discarded half of the data written is given back to the host, as qemu-io gives it back.
        long allocated = HostFile.AllocatedBytes(_dir.File("ours.raw"));
        Assert.True(allocated <= (512 << 10) + (64 << 10), $"data file still holds {allocated} bytes after discarding 512 KiB of 1 MiB");
    }

    private string Create(string name, string options)
    {
        var path = _dir.File(name + ".qcow2");
        var r = QemuTools.QemuImg("create", "-f", "qcow2", "-o", $"data_file={_dir.File(name + ".raw")},{options}", path, Size.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(r.ExitCode == 0, r.StdErr);
        return path;
    }

    private static void Qemu(string image, params string[] commands)
    {
        var args = new List<string>();
        foreach (var c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        var r = QemuTools.Run("qemu-io", args);
        Assert.True(r.ExitCode == 0 && !r.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), $"qemu-io {string.Join(' ', commands)}: {r.StdOut}{r.StdErr}");
    }
}
