using System.Text.Json;
using Qcow2Actors.Engine;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Tests.Shared.ImageFileBytes;

namespace Qcow2Actors.Nbd.Tests;

/// <summary><see cref="Qcow2Export"/> over qemu-made images, in process and through the server.</summary>
public sealed class Qcow2ExportTests : IDisposable
{
    private const int MiB = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string QemuImage(string name, string size, string? options, params string[] ioCommands)
    {
        var img = _dir.File(name);
        var args = new List<string> { "create", "-q", "-f", "qcow2" };
        if (options is not null) args.AddRange(["-o", options]);
        args.AddRange([img, size]);
        QemuTools.QemuImg([.. args]).EnsureSuccess();
        if (ioCommands.Length > 0)
            QemuTools.QemuIo([.. ioCommands.SelectMany(c => new[] { "-c", c }), img]).EnsureSuccess();
        return img;
    }

    private static async Task<Qcow2Export> OpenAsync(string img, string name = "disk") =>
        await Qcow2Export.OpenAsync(img, name, new Qcow2OpenOptions { ReadOnly = true });

    [Fact]
    public void Flags_follow_qemu_nbd()
    {
        static ImageExtent E(bool present, bool zero, bool data, int depth = 0) => new(0, 512, depth, present, zero, data, data ? 4096 : null, "f");
        Assert.Equal(NbdExtentFlags.None, Qcow2Export.Flags(E(present: true, zero: false, data: true)));
        Assert.Equal(NbdExtentFlags.None, Qcow2Export.Flags(E(present: true, zero: false, data: true, depth: 1)));
        Assert.Equal(NbdExtentFlags.Hole | NbdExtentFlags.Zero, Qcow2Export.Flags(E(present: false, zero: true, data: false)));
        Assert.Equal(NbdExtentFlags.Hole | NbdExtentFlags.Zero, Qcow2Export.Flags(E(present: true, zero: true, data: false)));
        // Unallocated over a backing file that does not decide either: allocated-unknown would be
        // wrong, qemu-nbd says hole without zero.
        Assert.Equal(NbdExtentFlags.Hole, Qcow2Export.Flags(E(present: false, zero: false, data: false)));
    }

    [NbdFact]
    public async Task Reads_and_size_are_the_images()
    {
        var img = QemuImage("r.qcow2", "3M", null, "write -P 0x42 100k 300k");
        await using var export = await OpenAsync(img);
        Assert.Equal(3 * MiB, export.Size);
        Assert.True(export.IsReadOnly);
        Assert.Contains("64 KiB clusters", export.Description);
        var buffer = new byte[400 * 1024];
        await export.ReadAsync(0, buffer, default);
        Assert.All(buffer.AsSpan(0, 100 * 1024).ToArray(), b => Assert.Equal(0, b));
        Assert.All(buffer.AsSpan(100 * 1024, 300 * 1024).ToArray(), b => Assert.Equal(0x42, b));
    }

    [NbdFact]
    public async Task Block_status_replies_are_bounded_and_continue_where_they_stop()
    {
        // 4 KiB clusters, every other one written: 2 * 2000 alternating runs.
        var img = QemuImage("alt.qcow2", "16000k", "cluster_size=4096",
            [.. Enumerable.Range(0, 2000).Select(i => $"write -P 1 {i * 8}k 4k")]);
        await using var export = await OpenAsync(img);

        long offset = 0;
        int replies = 0;
        var all = new List<NbdExtent>();
        while (offset < export.Size)
        {
            var extents = await export.GetBlockStatusAsync(offset, export.Size - offset, default);
            Assert.InRange(extents.Count, 1, Qcow2Export.MaxExtentsPerReply);
            all.AddRange(extents);
            offset += extents.Sum(e => e.Length);
            replies++;
        }
        Assert.Equal(export.Size, offset);
        Assert.True(replies >= 4, $"{replies} replies");
        Assert.Equal(4000, all.Count);
        for (int i = 0; i < all.Count; i++)
            Assert.Equal(new NbdExtent(4096, i % 2 == 0 ? NbdExtentFlags.None : NbdExtentFlags.Hole | NbdExtentFlags.Zero), all[i]);

        // Through the server, nbdinfo gathers the whole map from those bounded replies.
        await using var server = await TestServers.StartTcpAsync(export);
        using var map = JsonDocument.Parse(QemuTools.Run("nbdinfo", "--map", "--json", server.GetUri("disk")).EnsureSuccess().StdOut);
        var runs = map.RootElement.EnumerateArray().Select(e => (e.GetProperty("length").GetInt64(), e.GetProperty("type").GetInt32())).ToList();
        Assert.Equal(4000, runs.Count);
        Assert.Equal(export.Size, runs.Sum(r => r.Item1));
    }

    [NbdFact]
    public async Task Block_status_for_a_range_inside_a_run_is_trimmed_to_it()
    {
        var img = QemuImage("t.qcow2", "4M", null, "write -P 1 1M 1M");
        await using var export = await OpenAsync(img);
        var extents = await export.GetBlockStatusAsync(1536 * 1024, 4096, default);
        Assert.Equal(NbdExtentFlags.None, extents[0].Flags);
        Assert.True(extents.Sum(e => e.Length) >= 4096);
        extents = await export.GetBlockStatusAsync(3 * MiB, MiB, default);
        Assert.Equal([new NbdExtent(MiB, NbdExtentFlags.Hole | NbdExtentFlags.Zero)], extents);
    }

    [NbdFact]
    public async Task Fast_zero_is_offered_only_for_whole_clusters_of_a_v3_image()
    {
        await using (var v3 = await OpenAsync(QemuImage("v3.qcow2", "1000k", null)))
        {
            Assert.True(v3.CanZeroFast(0, 64 * 1024));
            Assert.True(v3.CanZeroFast(128 * 1024, 256 * 1024));
            Assert.False(v3.CanZeroFast(4096, 64 * 1024));
            Assert.False(v3.CanZeroFast(0, 65 * 1024));
            Assert.True(v3.CanZeroFast(960 * 1024, 40 * 1024), "the disk's end counts as a cluster boundary");
        }
        await using (var sub = await OpenAsync(QemuImage("sub.qcow2", "1M", "extended_l2=on")))
            Assert.True(sub.CanZeroFast(2048, 2048), "subclusters of 2 KiB zero by metadata too");
        await using (var v2 = await OpenAsync(QemuImage("v2.qcow2", "1M", "compat=0.10")))
            Assert.False(v2.CanZeroFast(0, 64 * 1024));
        var raw = _dir.File("r.raw");
        File.WriteAllBytes(raw, new byte[MiB]);
        await using (var r = await Qcow2Export.OpenAsync(raw, "raw", new Qcow2OpenOptions { ReadOnly = true, Format = "raw" }))
            Assert.False(r.CanZeroFast(0, MiB));
    }

    [NbdFact]
    public async Task A_damaged_table_fails_only_the_reads_that_reach_it_with_EIO()
    {
        var img = QemuImage("d.qcow2", "8M", null, "write -P 1 0 128k", "write -P 2 4M 64k");
        // Set reserved bits in the second L2 entry (guest offset 64 KiB).
        long l1 = (long)ReadU64(img, 40);
        long l2 = (long)(ReadU64(img, l1) & 0x00FF_FFFF_FFFF_FE00);
        WriteU64(img, l2 + 8, ReadU64(img, l2 + 8) | 0x0100_0000_0000_0000);

        await using var export = await OpenAsync(img);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await client.GoAsync("disk");

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 65536, 4096);
        var bad = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal((uint)NbdError.IoError, bad.Error);

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 4 * MiB, 4096);
        var good = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal(0u, good.Error);
        Assert.All(good.Data, b => Assert.Equal(2, b));
    }

    [NbdFact]
    public async Task A_read_only_export_answers_writes_with_EPERM()
    {
        var img = QemuImage("ro.qcow2", "1M", null);
        await using var export = await OpenAsync(img);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var (size, flags) = await client.GoAsync("disk");
        Assert.Equal((ulong)MiB, size);
        Assert.NotEqual(0, flags & 2); // NBD_FLAG_READ_ONLY
        await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 7, 0, 512, new byte[512]);
        Assert.Equal((uint)NbdError.NotPermitted, (await client.ReadSimpleReplyAsync()).Error);
        await client.SendRequestAsync(0, RawNbdClient.CmdTrim, 8, 0, 512);
        Assert.Equal((uint)NbdError.NotPermitted, (await client.ReadSimpleReplyAsync()).Error);
    }
}
