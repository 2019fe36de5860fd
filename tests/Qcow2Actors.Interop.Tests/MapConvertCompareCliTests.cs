using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>The map, convert and compare verbs as a user runs them: the real q2a executable, its stdout, stderr and exit code beside qemu-img's.</summary>
public sealed class MapConvertCompareCliTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private (string Base, string Top) Chain()
    {
        string bas = _dir.File("base.qcow2"), top = _dir.File("top.qcow2");
        Qemu("create", "-q", "-f", "qcow2", bas, "4M");
        Io(bas, ["write -P 1 0 64k", "write -z 128k 64k", "write -P 2 1M 4k"]);
        Qemu("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, "8M");
        Io(top, ["write -P 3 32k 64k", "write -z 1M 4k", "write -P 4 5M 4k"]);
        return (bas, top);
    }

    [QemuFact]
    public void Map_prints_exactly_what_qemu_img_map_prints_in_both_formats()
    {
        var (_, top) = Chain();
        Assert.Equal(QemuTools.QemuImg("map", "--output=json", top).StdOut, QemuTools.Q2a("map", "--output", "json", top).EnsureSuccess().StdOut);
        Assert.Equal(QemuTools.QemuImg("map", top).StdOut, QemuTools.Q2a("map", top).EnsureSuccess().StdOut);
        Assert.Equal(QemuTools.QemuImg("map", "-f", "qcow2", "--output=json", top).StdOut,
            QemuTools.Q2a("map", "-f", "qcow2", "--output=json", top).EnsureSuccess().StdOut);
    }

    [QemuFact]
    public void Map_human_refuses_compressed_clusters_like_qemu_img()
    {
        string raw = _dir.File("c.raw"), img = _dir.File("c.qcow2");
        File.WriteAllBytes(raw, Enumerable.Repeat((byte)7, 1 << 20).ToArray());
        Qemu("convert", "-q", "-f", "raw", "-c", "-O", "qcow2", raw, img);
        var r = QemuTools.Q2a("map", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("q2a: File contains external, encrypted or compressed clusters.", r.StdErr.Trim());
    }

    [QemuFact]
    public void Convert_writes_the_same_bytes_as_qemu_img_and_shows_progress()
    {
        var (_, top) = Chain();
        string ours = _dir.File("ours.raw"), theirs = _dir.File("theirs.raw");
        Qemu("convert", "-O", "raw", top, theirs);
        var r = QemuTools.Q2a("convert", "-p", "-O", "raw", top, ours).EnsureSuccess();
        AssertSameBytes(theirs, ours);
        // The harness splits output at \r as well as \n, so the in-place updates arrive as lines.
        var lines = r.StdOut.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("    (0.00/100%)", lines[0]);
        Assert.Equal("    (100.00/100%)", lines[^1]);
    }

    [QemuFact]
    public void Convert_leaves_unallocated_and_zero_ranges_as_holes()
    {
        string img = _dir.File("sparse.qcow2"), ours = _dir.File("sparse.raw");
        Qemu("create", "-q", "-f", "qcow2", img, "64M");
        Io(img, ["write -P 1 0 64k", "write -z 1M 8M"]);
        QemuTools.Q2a("convert", "-O", "raw", img, ours).EnsureSuccess();
        var info = new FileInfo(ours);
        Assert.Equal(64L << 20, info.Length);
        var du = QemuTools.Run("du", "-k", ours).EnsureSuccess().StdOut;
        Assert.True(int.Parse(du.Split('\t')[0]) < 1024, $"expected a sparse file, du says {du}");
    }

    [QemuFact]
    public void Compare_reports_identical_mismatch_and_errors_with_qemu_img_messages_and_exit_codes()
    {
        string a = _dir.File("a.qcow2"), b = _dir.File("b.qcow2"), c = _dir.File("c.qcow2");
        Qemu("create", "-q", "-f", "qcow2", a, "4M");
        Qemu("create", "-q", "-f", "qcow2", b, "4M");
        Qemu("create", "-q", "-f", "qcow2", c, "6M");
        Io(a, ["write -P 1 0 64k", "write -P 5 1000 1"]);
        Io(b, ["write -P 1 0 64k"]);
        Io(c, ["write -P 1 0 64k", "write -P 5 1000 1", "write -z 4M 64k"]);

        void Same(params string[] args)
        {
            var q = QemuTools.QemuImg(["compare", .. args]);
            var o = QemuTools.Q2a(["compare", .. args]);
            Assert.Equal(q.ExitCode, o.ExitCode);
            Assert.Equal(q.StdOut, o.StdOut);
        }

        Same(a, b);          // 1: Content mismatch at offset 512!
        Same(a, c);          // 0: size mismatch, extra part zero
        Io(c, ["write -P 9 5000001 1"]);
        Same(c, a);          // 1: mismatch in the extra part, rounded to its sector
        Same("-f", "qcow2", "-F", "qcow2", a, a);
        var missing = QemuTools.Q2a("compare", a, _dir.File("nope.qcow2"));
        Assert.Equal(2, missing.ExitCode);
        Assert.StartsWith("q2a: Could not open", missing.StdErr);
    }
}
