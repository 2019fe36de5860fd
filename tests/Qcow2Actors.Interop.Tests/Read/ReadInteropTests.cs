using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests.Read;

public sealed class ReadInteropTests : IDisposable
{
    private const long Mi = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData(9)] [InlineData(10)] [InlineData(11)] [InlineData(12)] [InlineData(13)] [InlineData(14)] [InlineData(15)]
    [InlineData(16)] [InlineData(17)] [InlineData(18)] [InlineData(19)] [InlineData(20)] [InlineData(21)]
    public async Task Every_cluster_size_reads_and_maps_like_qemu(int clusterBits)
    {
        string img = _dir.File("c.qcow2");
        // Small clusters make small L2 tables: 16 MiB crosses many of them at 512 B..4 KiB clusters.
        Qemu("create", "-q", "-f", "qcow2", "-o", $"cluster_size={1 << clusterBits}", img, "16M");
        Io(img, RandomWrites(clusterBits, 16 * Mi, 24));
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuTheory]
    [InlineData(1)] [InlineData(2)] [InlineData(4)] [InlineData(8)] [InlineData(16)] [InlineData(32)] [InlineData(64)]
    public async Task Every_refcount_width_reads_like_qemu(int refcountBits)
    {
        string img = _dir.File("r.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", $"refcount_bits={refcountBits}", img, "8M");
        Io(img, RandomWrites(100 + refcountBits, 8 * Mi, 16));
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Version_2_image_reads_like_qemu()
    {
        string img = _dir.File("v2.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "compat=0.10", img, "8M");
        Io(img, RandomWrites(2, 8 * Mi, 20));
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Zero_clusters_plain_and_preallocated_read_as_zeros_over_a_backing_file()
    {
        string bas = _dir.File("zb.qcow2"), img = _dir.File("z.qcow2");
        Qemu("create", "-q", "-f", "qcow2", bas, "4M");
        Io(bas, ["write -P 0x11 0 4M"]);
        Qemu("create", "-q", "-f", "qcow2", "-b", bas, "-F", "qcow2", img);
        // -z over data keeps the cluster (preallocated zero); -z over nothing is a plain zero cluster;
        // -z -u drops the cluster.
        Io(img, ["write -P 0x22 0 256k", "write -z 64k 64k", "write -z 1M 128k", "write -P 3 2M 128k", "write -z -u 2M 64k"]);
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuTheory]
    [InlineData("zlib")]
    [InlineData("zstd")]
    public async Task Compressed_clusters_decompress_like_qemu(string type)
    {
        string raw = _dir.File("src.raw"), img = _dir.File("comp.qcow2");
        var rng = new Random(7);
        var data = new byte[8 * Mi];
        for (int i = 0; i < data.Length; i += 64 * 1024)
        {
            switch (rng.Next(4))
            {
                case 0: break; // zeros: not stored
                case 1: rng.NextBytes(data.AsSpan(i, 64 * 1024)); break; // incompressible: stored plain
                default:
                    for (int j = 0; j < 64 * 1024; j++) data[i + j] = (byte)((j / 100) ^ rng.Next(4));
                    break;
            }
        }
        await File.WriteAllBytesAsync(raw, data);
        Qemu("convert", "-q", "-f", "raw", "-c", "-O", "qcow2", "-o", $"compression_type={type}", raw, img);
        await AssertMatchesQemuAsync(_dir, img);
        Assert.Equal(data, await ReadAllAsync(img));
    }

    [QemuFact]
    public async Task Extended_l2_subcluster_writes_read_and_map_like_qemu()
    {
        string img = _dir.File("ext.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", img, "16M");
        Io(img, RandomWrites(42, 16 * Mi, 40, maxLength: 12 * 1024, align: 2048));
        Io(img, ["write -P 9 2k 2k", "write -z 8k 2k", "write -P 8 126k 4k", "write -z -u 1M 64k"]);
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Extended_l2_over_a_backing_file_reads_unallocated_subclusters_from_it()
    {
        string bas = _dir.File("eb.qcow2"), img = _dir.File("e.qcow2");
        Qemu("create", "-q", "-f", "qcow2", bas, "4M");
        Io(bas, ["write -P 0x5a 0 4M"]);
        Qemu("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=32k", "-b", bas, "-F", "qcow2", img);
        Io(img, RandomWrites(43, 4 * Mi, 30, maxLength: 8 * 1024, align: 1024));
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Three_level_qcow2_chain_reads_each_range_from_the_right_level()
    {
        string a = _dir.File("l0.qcow2"), b = _dir.File("l1.qcow2"), c = _dir.File("l2.qcow2");
        Qemu("create", "-q", "-f", "qcow2", a, "8M");
        Io(a, RandomWrites(10, 8 * Mi, 16));
        Qemu("create", "-q", "-f", "qcow2", "-b", "l0.qcow2", "-F", "qcow2", b);
        Io(b, RandomWrites(11, 8 * Mi, 16));
        Qemu("create", "-q", "-f", "qcow2", "-b", "l1.qcow2", "-F", "qcow2", c);
        Io(c, RandomWrites(12, 8 * Mi, 16));
        await AssertMatchesQemuAsync(_dir, c);
    }

    [QemuFact]
    public async Task Raw_backing_file_shorter_than_the_overlay_reads_zeros_past_its_end()
    {
        string raw = _dir.File("base.raw"), img = _dir.File("over.qcow2");
        var data = new byte[3 * Mi];
        new Random(3).NextBytes(data.AsSpan(0, (int)(1 * Mi)));
        data.AsSpan((int)(2 * Mi), 4096).Fill(0x77);
        await File.WriteAllBytesAsync(raw, data);
        Qemu("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", img, "8M");
        Io(img, ["write -P 1 512k 64k", "write -P 2 5M 64k"]);
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Backing_format_is_probed_when_the_header_does_not_name_it()
    {
        string bas = _dir.File("p.qcow2"), img = _dir.File("po.qcow2");
        Qemu("create", "-q", "-f", "qcow2", bas, "4M");
        Io(bas, ["write -P 4 0 1M"]);
        Qemu("create", "-q", "-f", "qcow2", "-b", bas, "-F", "qcow2", img);
        // qemu-img 7.2 always records the backing format; drop the extension by rewriting cluster 0.
        var cluster0 = new byte[65536];
        using (var fs = File.Open(img, FileMode.Open, FileAccess.ReadWrite))
        {
            fs.ReadExactly(cluster0);
            var block = Format.ImageHeaderBlock.Read(cluster0);
            block.BackingFormat = null;
            Array.Clear(cluster0);
            block.Write(cluster0);
            fs.Position = 0;
            fs.Write(cluster0);
        }
        Io(img, ["write -P 5 512k 64k"], "qcow2");
        await using var opened = await Engine.Qcow2Image.OpenAsync(img);
        Assert.Null(opened.Info.BackingFormat);
        var buf = new byte[1];
        await opened.ReadAsync(0, buf);
        Assert.Equal(4, buf[0]);
    }

    [QemuFact]
    public async Task Internal_snapshots_read_by_name_and_by_id_like_qemu()
    {
        string img = _dir.File("snap.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "8M");
        Io(img, RandomWrites(20, 8 * Mi, 12));
        Qemu("snapshot", "-c", "first", img);
        Io(img, RandomWrites(21, 8 * Mi, 12));
        Qemu("snapshot", "-c", "second", img);
        Io(img, RandomWrites(22, 8 * Mi, 12));
        Qemu("resize", img, "12M"); // the active image outgrows its snapshots
        Io(img, ["write -P 9 10M 64k"]);

        await AssertMatchesQemuAsync(_dir, img);
        await AssertMatchesQemuAsync(_dir, img, snapshot: "snapshot.name=first");
        await AssertMatchesQemuAsync(_dir, img, snapshot: "snapshot.id=2");
        await AssertMatchesQemuAsync(_dir, img, snapshot: "second");
        await using var snap = await Engine.Qcow2Image.OpenAsync(img, new Engine.Qcow2OpenOptions { Snapshot = "first" });
        Assert.Equal(8 * Mi, snap.VirtualSize);
    }

    [QemuTheory]
    [InlineData("on")]
    [InlineData("off")]
    public async Task External_data_file_reads_like_qemu(string rawData)
    {
        string img = _dir.File("ed.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", $"data_file={_dir.File("ed.data")},data_file_raw={rawData}", img, "8M");
        Io(img, RandomWrites(30, 8 * Mi, 16));
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Image_with_persistent_bitmaps_reads_like_qemu()
    {
        string img = _dir.File("bm.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "8M");
        Qemu("bitmap", "--add", img, "b0");
        Qemu("bitmap", "--add", "-g", "128k", img, "b1");
        Io(img, RandomWrites(31, 8 * Mi, 12));
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Lazy_refcount_image_left_dirty_by_a_killed_writer_reads_like_qemu()
    {
        string img = _dir.File("lazy.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "8M");
        Io(img, ["write -P 1 0 1M"]);
        // abort kills qemu-io without closing the image: the dirty bit stays set.
        var args = new List<string>();
        foreach (var c in RandomWrites(32, 8 * Mi, 10).Append("abort")) { args.Add("-c"); args.Add(c); }
        args.Add(img);
        QemuTools.Run("qemu-io", args);
        await using (var opened = await Engine.Qcow2Image.OpenAsync(img))
            Assert.True(opened.Header!.IsDirty);
        await AssertMatchesQemuAsync(_dir, img);
    }

    [QemuFact]
    public async Task Raw_image_maps_holes_like_qemu()
    {
        string raw = _dir.File("plain.raw");
        Qemu("create", "-q", "-f", "raw", raw, "8M");
        Io(raw, ["write -P 3 1M 64k", "write -P 4 5M 4k"], "raw");
        await AssertMatchesQemuAsync(_dir, raw, "raw");
    }
}
