using System.Text.RegularExpressions;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// Data clusters whose host range the file system never stored (the issue 14 audit's divergence): when
/// the image file holds noticeably fewer blocks than its refcounts reference, qemu 7.2 asks the host file
/// for holes inside data clusters and reports a hole as zero (still data). q2a's block status must agree
/// in map and measure JSON, in what convert writes, and in NBD block status next to qemu-nbd; an ordinary
/// image (no such holes) must keep reporting plain data.
/// </summary>
public sealed partial class HostHoleStatusInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    // The audit's repro: a write that leaves a new cluster's tail zero-allocated (on ext4 an unwritten extent, a hole
    // to SEEK_HOLE until something reads it into the page cache), then two bitmaps whose tables are holes. Only
    // verbs that read no guest data run on it, so both tools see the same file state.
    private string SparseTail()
    {
        string img = _dir.File("sparse.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "64M");
        Io(img, ["write -P 1 0 1M", "write -z 4M 1M", "write -P 2 40M 100k"]);
        Qemu("bitmap", "--add", img, "b0");
        Qemu("bitmap", "--add", "-g", "64k", img, "b1");
        return img;
    }

    // Clusters referenced but never written: true holes, whatever the page cache holds.
    private string MetadataPreallocated()
    {
        string img = _dir.File("prealloc.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", img, "8M");
        Io(img, ["write -P 3 1M 100k", "write -P 4 5M 4k"]);
        return img;
    }

    private static string Same(params string[] args)
    {
        var q = QemuTools.QemuImg(args);
        var o = QemuTools.Q2a(args);
        Assert.True(q.ExitCode == 0 && o.ExitCode == 0, $"{string.Join(' ', args)}: qemu-img {q.ExitCode} {q.StdErr}; q2a {o.ExitCode} {o.StdErr}");
        Assert.Equal(q.StdOut, o.StdOut);
        return q.StdOut;
    }

    [QemuFact]
    public void Map_and_measure_report_data_over_host_holes_as_qemu_img_does()
    {
        string sparse = SparseTail();
        var map = Same("map", "--output=json", sparse);
        // The oracle saw what this test is about: a data cluster whose tail is a hole, reported zero and data.
        Assert.Contains("\"zero\": true, \"data\": true", map, StringComparison.Ordinal);
        Same("map", sparse);
        Same("measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=4k", sparse);
        Same("measure", "-O", "qcow2", sparse);
        Same("measure", "--output=json", "-O", "raw", sparse);

        string prealloc = MetadataPreallocated();
        Assert.Contains("\"zero\": true, \"data\": true", Same("map", "--output=json", prealloc), StringComparison.Ordinal);
        Same("measure", "--output=json", "-O", "qcow2", prealloc);
        Same("measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=4k", prealloc);

        // An overlay over the preallocated image: the backing layer's holes count at depth 1 too.
        string top = _dir.File("top.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-b", prealloc, "-F", "qcow2", top);
        Io(top, ["write -P 5 1M 4k"]);
        Same("map", "--output=json", top);
        Same("measure", "--output=json", "-O", "qcow2", top);
    }

    [QemuFact]
    public void An_image_with_every_cluster_stored_keeps_reporting_plain_data()
    {
        string img = _dir.File("full.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "8M");
        // The last cluster is only partly written: a hole there would be reported zero if q2a asked the file.
        Io(img, ["write -P 1 0 2M", "write -P 2 3M 100k"]);
        var map = Same("map", "--output=json", img);
        Assert.DoesNotContain("\"zero\": true, \"data\": true", map, StringComparison.Ordinal);
        Same("measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=4k", img);
    }

    [QemuFact]
    public void Convert_of_data_over_host_holes_writes_what_qemu_img_convert_writes()
    {
        string source = MetadataPreallocated();
        foreach (var options in new[] { new[] { "-O", "qcow2" }, ["-O", "qcow2", "-S", "0"], ["-O", "raw"] })
        {
            string theirs = _dir.File($"theirs-{Guid.NewGuid():N}"), ours = _dir.File($"ours-{Guid.NewGuid():N}");
            QemuTools.QemuImg(["convert", .. options, source, theirs]).EnsureSuccess();
            QemuTools.Q2a(["convert", .. options, source, ours]).EnsureSuccess();
            string format = options[1];
            var cmp = QemuTools.QemuImg("compare", "-f", format, "-F", format, theirs, ours);
            Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
            if (format == "qcow2")
            {
                QemuTools.AssertCheckClean(ours);
                Assert.Equal(WithoutOffsets(QemuTools.QemuImg("map", "--output=json", theirs).EnsureSuccess().StdOut),
                    WithoutOffsets(QemuTools.QemuImg("map", "--output=json", ours).EnsureSuccess().StdOut));
            }
        }
    }

    [ServeFact]
    public async Task Nbd_block_status_over_host_holes_matches_qemu_nbd()
    {
        string img = MetadataPreallocated();
        string theirs;
        using (var qemu = QemuNbdProcess.Start(img, _dir, "-r"))
            theirs = QemuTools.Run("nbdinfo", ["--map", qemu.Uri]).EnsureSuccess().StdOut;
        Assert.Contains("zero", theirs, StringComparison.Ordinal);
        using (var serve = await ServeProcess.StartAsync(1, "-r", "--socket", _dir.File("ro.sock"), img))
            Assert.Equal(theirs, QemuTools.Run("nbdinfo", ["--map", serve.Uri]).EnsureSuccess().StdOut);
        // A writable export answers from the same read side.
        using (var serve = await ServeProcess.StartAsync(1, "--socket", _dir.File("rw.sock"), img))
            Assert.Equal(theirs, QemuTools.Run("nbdinfo", ["--map", serve.Uri]).EnsureSuccess().StdOut);
    }

    private static string WithoutOffsets(string mapJson) => OffsetField().Replace(mapJson, "");

    [GeneratedRegex(@", ""offset"": \d+")]
    private static partial Regex OffsetField();
}
