using System.Text.Json;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Create;

public class ImageCreatorTests
{
    public static TheoryData<int, int, int, bool, bool> Layouts()
    {
        var data = new TheoryData<int, int, int, bool, bool>();
        foreach (var cs in new[] { 512, 4096, 65536, 2 * 1024 * 1024 })
            foreach (var bits in new[] { 1, 2, 4, 8, 16, 32, 64 })
                data.Add(cs, bits, 3, false, false);
        data.Add(65536, 16, 2, false, false);
        data.Add(512, 16, 2, false, true);
        data.Add(65536, 16, 3, true, false);
        data.Add(16384, 1, 3, true, true);
        data.Add(4096, 64, 3, false, true);
        data.Add(512, 1, 3, false, true);
        return data;
    }

    [QemuTheory]
    [MemberData(nameof(Layouts))]
    public void Created_image_is_check_clean_and_reads_as_zeros(int clusterSize, int refcountBits, int version, bool extendedL2, bool prealloc)
    {
        using var dir = new TempDir();
        var path = dir.File("new.qcow2");
        long size = 64L * 1024 * 1024 + 3 * 512;
        ImageCreator.Create(path, new Qcow2CreateOptions
        {
            Size = size, ClusterSize = clusterSize, RefcountBits = refcountBits, Version = version, ExtendedL2 = extendedL2,
            Preallocation = prealloc ? Preallocation.Metadata : Preallocation.Off,
        });

        QemuTools.QemuImg("check", path).EnsureSuccess();
        var info = JsonDocument.Parse(QemuTools.QemuImg("info", "--output=json", path).EnsureSuccess().StdOut).RootElement;
        Assert.Equal(size, info.GetProperty("virtual-size").GetInt64());
        Assert.Equal(clusterSize, info.GetProperty("cluster-size").GetInt32());
        var specific = info.GetProperty("format-specific").GetProperty("data");
        Assert.Equal(version == 2 ? "0.10" : "1.1", specific.GetProperty("compat").GetString());
        Assert.Equal(refcountBits, specific.GetProperty("refcount-bits").GetInt32());
        if (version == 3) Assert.Equal(extendedL2, specific.GetProperty("extended-l2").GetBoolean());
        var zeros = dir.File("zeros.raw");
        File.WriteAllBytes(zeros, []);
        QemuTools.QemuImg("resize", "-f", "raw", zeros, size.ToString()).EnsureSuccess();
        var cmp = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", path, zeros);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
    }

    [QemuFact]
    public void Overlay_with_backing_file_and_format_reads_through_to_the_backing_file()
    {
        using var dir = new TempDir();
        var baseImage = dir.File("base.raw");
        var bytes = new byte[1024 * 1024];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(baseImage, bytes);
        var overlay = dir.File("overlay.qcow2");
        ImageCreator.Create(overlay, new Qcow2CreateOptions { Size = bytes.Length, BackingFile = "base.raw", BackingFormat = "raw" });

        QemuTools.QemuImg("check", overlay).EnsureSuccess();
        var cmp = QemuTools.QemuImg("compare", "-F", "raw", overlay, baseImage);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
    }

    [QemuFact]
    public void External_raw_data_file_image_is_created_with_its_data_file()
    {
        using var dir = new TempDir();
        var path = dir.File("ext.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 8 << 20, DataFile = dir.File("ext.data"), DataFileRaw = true, Preallocation = Preallocation.Metadata });

        Assert.Equal(8 << 20, new FileInfo(dir.File("ext.data")).Length);
        QemuTools.QemuImg("check", path).EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 0x5a 0 64k", path).EnsureSuccess();
        var data = File.ReadAllBytes(dir.File("ext.data"));
        Assert.All(data.AsSpan(0, 65536).ToArray(), b => Assert.Equal(0x5a, b));
    }

    [Fact]
    public void Version_2_refuses_options_that_need_version_3()
    {
        using var dir = new TempDir();
        var ex = Assert.Throws<ArgumentException>(() => ImageCreator.Create(dir.File("v2.qcow2"),
            new Qcow2CreateOptions { Size = 1 << 20, Version = 2, RefcountBits = 8 }));
        Assert.Contains("compat=1.1", ex.Message);
        Assert.False(File.Exists(dir.File("v2.qcow2")));
    }

    [Fact]
    public void Header_block_names_the_journal_pending_bit_in_the_feature_table()
    {
        var block = ImageCreator.BuildHeaderBlock(new Qcow2CreateOptions { Size = 1 << 20 });
        Assert.Equal(FeatureNameTable.JournalPendingName, block.FeatureNames!.Lookup(FeatureType.Incompatible, 63));
    }
}
