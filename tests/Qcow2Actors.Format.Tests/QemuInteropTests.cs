using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Format.Tests;

/// <summary>
/// The decoders against images qemu-img wrote, and images built with the encoders against
/// qemu-img: our own reader agreeing with our own writer would prove nothing.
/// </summary>
public class QemuInteropTests
{
    private static byte[] Create(TempDir dir, string name, params string[] options)
    {
        var path = dir.File(name);
        QemuTools.QemuImg(new[] { "create", "-q", "-f", "qcow2" }.Concat(options).Append(path).Append("1G").ToArray()).EnsureSuccess();
        return File.ReadAllBytes(path);
    }

    [QemuFact]
    public void Overlay_cluster_0_reads_and_rewrites_byte_for_byte()
    {
        using var dir = new TempDir();
        Create(dir, "base.qcow2");
        var image = Create(dir, "ov.qcow2", "-b", dir.File("base.qcow2"), "-F", "qcow2");
        var block = ImageHeaderBlock.Read(image);
        Assert.Equal("qcow2", block.BackingFormat);
        Assert.Equal(dir.File("base.qcow2"), block.BackingFileName);
        Assert.Equal(0x210, block.Header.BackingFileOffset);
        Assert.Equal(FeatureNameTable.QemuDefault().Entries, block.FeatureNames!.Entries);
        var again = new byte[65536];
        block.Write(again);
        Assert.Equal(image.AsSpan(0, 65536).ToArray(), again);
    }

    [QemuFact]
    public void Zstd_extended_L2_image_with_a_snapshot_and_a_bitmap_decodes_and_reencodes()
    {
        using var dir = new TempDir();
        var path = dir.File("x.qcow2");
        Create(dir, "x.qcow2", "-o", "extended_l2=on,compression_type=zstd");
        QemuTools.QemuImg("snapshot", "-c", "s1", path).EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", path, "bm0").EnsureSuccess();
        var image = File.ReadAllBytes(path);

        var block = ImageHeaderBlock.Read(image);
        var h = block.Header;
        Assert.Equal(CompressionType.Zstd, h.CompressionType);
        Assert.True(h.HasExtendedL2);
        Assert.Equal(AutoclearFeatures.Bitmaps, h.AutoclearFeatures);
        Assert.Equal(1, h.NbSnapshots);
        var again = new byte[65536];
        block.Write(again);
        Assert.Equal(image.AsSpan(0, 65536).ToArray(), again);

        var snaps = SnapshotTable.Read(image.AsSpan((int)h.SnapshotsOffset), h.NbSnapshots, h.Version, h.SnapshotsOffset);
        var s = Assert.Single(snaps);
        Assert.Equal("1", s.Id);
        Assert.Equal("s1", s.Name);
        Assert.Equal(1L << 30, s.DiskSize);
        Assert.Null(s.Validate(h.ClusterBits));
        var table = new byte[SnapshotTable.ComputeSize(snaps)];
        SnapshotTable.Write(snaps, table);
        Assert.Equal(image.AsSpan((int)h.SnapshotsOffset, table.Length).ToArray(), table);

        var bm = block.Bitmaps!;
        var dirBytes = image.AsSpan((int)bm.DirectoryOffset, (int)bm.DirectorySize);
        var entries = BitmapDirectory.Read(dirBytes, bm.NbBitmaps, bm.DirectoryOffset);
        var e = Assert.Single(entries);
        Assert.Equal("bm0", e.Name);
        Assert.Equal(16, e.GranularityBits);
        Assert.Null(e.Validate(h.ClusterBits));
        var dirAgain = new byte[BitmapDirectory.ComputeSize(entries)];
        BitmapDirectory.Write(entries, dirAgain);
        Assert.Equal(dirBytes.ToArray(), dirAgain);
        var t = BitmapTableEntry.Read(image.AsSpan((int)e.TableOffset), 0);
        Assert.Null(t.Validate(h.ClusterBits));
    }

    [QemuFact]
    public void Version_2_image_decodes_and_reencodes()
    {
        using var dir = new TempDir();
        var image = Create(dir, "v2.qcow2", "-o", "compat=0.10");
        var block = ImageHeaderBlock.Read(image);
        Assert.Equal(2, block.Header.Version);
        Assert.Equal(72, block.Header.HeaderLength);
        var again = new byte[65536];
        block.Write(again);
        Assert.Equal(image.AsSpan(0, 65536).ToArray(), again);
    }

    [QemuTheory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    public void Refcounts_of_a_new_qemu_image_read_as_1_for_its_four_metadata_clusters(int bits)
    {
        using var dir = new TempDir();
        var image = Create(dir, "r.qcow2", "-o", $"refcount_bits={bits}");
        var h = ImageHeaderBlock.Read(image).Header;
        Assert.Equal(bits, h.RefcountBits);
        var rt = RefcountTableEntry.Read(image.AsSpan((int)h.RefcountTableOffset), 0);
        Assert.Null(rt.Validate(h.ClusterBits));
        var block = image.AsSpan((int)rt.BlockOffset, h.ClusterSize);
        for (int i = 0; i < 4; i++) Assert.Equal(1UL, RefcountBlock.Get(block, i, h.RefcountOrder));
        Assert.Equal(0UL, RefcountBlock.Get(block, 4, h.RefcountOrder));
    }

    [QemuFact]
    public void QEMU_refuses_an_image_with_the_journal_bit_and_names_it()
    {
        using var dir = new TempDir();
        var path = dir.File("j.qcow2");
        var image = Create(dir, "j.qcow2");
        var block = ImageHeaderBlock.Read(image);
        block.Header.IncompatibleFeatures |= IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending;
        block.FeatureNames = FeatureNameTable.Qcow2ActorsDefault();
        block.Write(image);
        File.WriteAllBytes(path, image);

        Assert.True(ImageHeaderBlock.Read(image).Header.IsJournalPending);
        var r = QemuTools.QemuImg("info", path);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("Unsupported qcow2 feature(s): journal pending: run q2a recover", r.StdErr, StringComparison.Ordinal);
    }

    [QemuFact]
    public void An_image_built_from_the_encoders_passes_qemu_img_check_and_reads_back()
    {
        using var dir = new TempDir();
        var path = dir.File("ours.qcow2");
        const int cs = 65536;
        // Layout: header, refcount table, refcount block, L1, one L2, one data cluster; guest cluster 1 is a zero entry.
        var h = Qcow2Header.CreateNew(1L << 30, 16);
        h.RefcountTableOffset = cs;
        h.L1TableOffset = 3 * cs;
        var image = new byte[6 * cs];
        var block = new ImageHeaderBlock(h) { FeatureNames = FeatureNameTable.QemuDefault() };
        block.Write(image);
        RefcountTableEntry.Create(2 * cs).Write(image.AsSpan(cs), 0);
        for (int i = 0; i < 6; i++) RefcountBlock.Set(image.AsSpan(2 * cs, cs), i, h.RefcountOrder, 1);
        L1Entry.Create(4 * cs, copied: true).Write(image.AsSpan(3 * cs), 0);
        L2Table.WriteEntry(image.AsSpan(4 * cs, cs), 0, false, L2Entry.Standard(5 * cs, copied: true));
        L2Table.WriteEntry(image.AsSpan(4 * cs, cs), 1, false, L2Entry.Zero());
        image.AsSpan(5 * cs, cs).Fill(0x5A);
        File.WriteAllBytes(path, image);

        var check = QemuTools.QemuImg("check", path);
        Assert.True(check.ExitCode == 0, check.StdOut + check.StdErr);
        var io = QemuTools.QemuIo("-c", "read -P 0x5a 0 64k", "-c", "read -P 0 64k 64k", "-c", "read -P 0 128k 64k", path).EnsureSuccess();
        Assert.DoesNotContain("failed", io.StdOut + io.StdErr, StringComparison.OrdinalIgnoreCase);
    }
}
