using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// amend, measure, resize --shrink, compare -s and create's preallocation modes run on q2a and on
/// qemu-img with the same inputs: the same exit code and message, the same image content
/// (qemu-img compare), a clean qemu-img check, the same format options, and for measure the same
/// text and JSON byte for byte.
/// </summary>
public sealed class AmendMeasureShrinkInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Image(string name, string options, params string[] io)
    {
        string path = _dir.File(name);
        Qemu("create", "-q", "-f", "qcow2", "-o", options, path, "16M");
        if (io.Length > 0) Io(path, io);
        return path;
    }

    // The part of qemu-img's message after its "qemu-img: " prefix (q2a's after "q2a: ").
    private static string Message(QemuTools.Result r, string prefix) =>
        string.Join('\n', r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.StartsWith(prefix, StringComparison.Ordinal) ? l[prefix.Length..] : l));

    private static string FormatSpecific(string image)
    {
        var info = QemuTools.QemuImg("info", image).EnsureSuccess().StdOut;
        return info[info.IndexOf("Format specific", StringComparison.Ordinal)..];
    }

    /// <summary>Runs the verb on a copy for each tool and asserts the same outcome; returns the two copies.</summary>
    private (string Theirs, string Ours) Same(string verb, string source, params string[] args)
    {
        string theirs = _dir.File($"theirs-{Guid.NewGuid():N}.qcow2"), ours = _dir.File($"ours-{Guid.NewGuid():N}.qcow2");
        File.Copy(source, theirs);
        File.Copy(source, ours);
        string[] Args(string img) => [verb, .. args.Select(a => a == "IMG" ? img : a)];
        var q = QemuTools.QemuImg(Args(theirs));
        var o = QemuTools.Q2a(Args(ours));
        Assert.Equal(q.ExitCode, o.ExitCode);
        if (args.Contains("-p"))
        {
            // Progress: both start at 0 and end at 100 (the steps between are each tool's own).
            var lines = o.StdOut.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(("    (0.00/100%)", "    (100.00/100%)"), (lines[0], lines[^1]));
        }
        else
        {
            Assert.Equal(q.StdOut, o.StdOut);
        }
        Assert.Equal(Message(q, "qemu-img: ").Split('\n')[0], Message(o, "q2a: "));
        QemuTools.AssertCheckClean(ours);
        Assert.Equal(0, QemuTools.QemuImg("compare", theirs, ours).ExitCode);
        Assert.Equal(FormatSpecific(theirs), FormatSpecific(ours));
        return (theirs, ours);
    }

    [QemuFact]
    public void Amend_changes_compat_refcount_width_and_lazy_refcounts_as_qemu_img_does()
    {
        string v3 = Image("v3.qcow2", "compat=1.1", "write -P 1 0 1M", "write -z 2M 1M", "write -P 2 3M 64k", "write -z 3M 64k", "write -c -P 3 5M 64k");
        string v2 = Image("v2.qcow2", "compat=0.10", "write -P 1 0 1M");
        string wide = Image("r64.qcow2", "refcount_bits=64", "write -P 1 0 1M");
        Same("amend", v3, "-o", "compat=0.10", "IMG");
        Same("amend", v3, "-o", "refcount_bits=1", "IMG");
        Same("amend", v3, "-p", "-o", "refcount_bits=64,lazy_refcounts=on", "IMG");
        Same("amend", v2, "-o", "compat=1.1,refcount_bits=8", "IMG");
        Same("amend", wide, "-o", "compat=0.10,refcount_bits=16", "IMG");
        // A backing file shows through unallocated clusters: zero clusters become allocated zeros.
        string overlay = _dir.File("overlay.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-b", "v2.qcow2", "-F", "qcow2", overlay);
        Io(overlay, ["write -z 0 256k", "write -P 4 4M 64k"]);
        Same("amend", overlay, "-o", "compat=0.10", "IMG");
    }

    [QemuFact]
    public void Amend_refuses_what_qemu_img_refuses_with_its_words_and_leaves_the_image_alone()
    {
        string v3 = Image("v3.qcow2", "compat=1.1", "write -P 1 0 64k");
        string v2 = Image("v2.qcow2", "compat=0.10", "write -P 1 0 64k");
        string extended = Image("ext.qcow2", "extended_l2=on", "write -P 1 0 64k");
        string wide = Image("r64.qcow2", "refcount_bits=64", "write -P 1 0 64k");
        string withData = _dir.File("d.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "data_file=d.raw", withData, "16M");
        Same("amend", v3, "-o", "refcount_bits=3", "IMG");
        Same("amend", v3, "-o", "compat=0.10,lazy_refcounts=on", "IMG");
        Same("amend", v3, "-o", "data_file=x.raw", "IMG");
        Same("amend", v2, "-o", "refcount_bits=8", "IMG");
        Same("amend", v2, "-o", "lazy_refcounts=on", "IMG");
        Same("amend", extended, "-o", "compat=0.10", "IMG");
        Same("amend", wide, "-o", "compat=0.10", "IMG");
        Same("amend", withData, "-o", "compat=0.10", "IMG");
        Same("amend", withData, "-o", "data_file_raw=on", "IMG");
        QemuTools.QemuImg("snapshot", "-c", "s1", v3).EnsureSuccess();
        Same("amend", v3, "-o", "refcount_bits=1", "IMG");
    }

    [QemuFact]
    public void Measure_prints_what_qemu_img_measure_prints()
    {
        string img = Image("m.qcow2", "compat=1.1", "write -P 1 0 1M", "write -P 2 10M 3k", "write -z 12M 1M");
        Qemu("bitmap", "--add", "-g", "512", img, "b1");
        string raw = _dir.File("m.raw");
        using (var f = File.Create(raw)) { f.SetLength(10 << 20); f.Position = 5_000_000; f.WriteByte(1); }
        string[][] cases =
        [
            ["--size", "1G"],
            ["-O", "qcow2", "--size", "1G", "--output", "json"],
            ["-O", "qcow2", "-o", "cluster_size=4k,extended_l2=on", "--size", "1G"],
            ["-O", "qcow2", "-o", "cluster_size=32k,extended_l2=on,preallocation=full", "--size", "3G", "--output=json"],
            ["-O", "qcow2", img],
            ["-O", "qcow2", "--output=json", "-o", "cluster_size=2M,refcount_bits=1", img],
            ["-O", "qcow2", "-o", "compat=0.10", img],
            ["-O", "qcow2", "-o", "backing_file=x.qcow2", img, "--output=json"],
            ["-O", "raw", img],
            ["-f", "raw", "-O", "qcow2", raw, "--output=json"],
            ["-O", "qcow2", "-o", "cluster_size=1k", "--size", "1P"],
            ["-O", "qcow2", "-o", "refcount_bits=3", "--size", "1M"],
        ];
        foreach (var args in cases)
        {
            var q = QemuTools.QemuImg(["measure", .. args]);
            var o = QemuTools.Q2a(["measure", .. args]);
            Assert.Equal((q.ExitCode, q.StdOut, Message(q, "qemu-img: ")), (o.ExitCode, o.StdOut, Message(o, "q2a: ")));
        }
    }

    [QemuFact]
    public void Resize_shrink_discards_past_the_new_end_as_qemu_img_does()
    {
        string img = Image("s.qcow2", "compat=1.1", "write -P 1 0 1M", "write -P 2 10M 1M", "write -c -P 3 6M 64k", "write -z 8M 1M");
        string small = Image("t.qcow2", "cluster_size=512", "write -P 1 0 1M", "write -P 2 5M 1M");
        Same("resize", img, "IMG", "8M");
        Same("resize", img, "--shrink", "IMG", "8M");
        Same("resize", img, "--shrink", "IMG", "6200k");
        Same("resize", img, "--shrink", "IMG", "--", "-15M");
        Same("resize", img, "--shrink", "IMG", "1000");
        Same("resize", small, "--shrink", "IMG", "5500k");
        // A snapshot keeps what the disk dropped: applying it brings the data back.
        QemuTools.QemuImg("snapshot", "-c", "s1", img).EnsureSuccess();
        var (_, ours) = Same("resize", img, "--shrink", "IMG", "4M");
        QemuTools.Q2a("snapshot", "-a", "s1", ours).EnsureSuccess();
        Assert.Equal(0, QemuTools.QemuImg("compare", img, ours).ExitCode);
        QemuTools.AssertCheckClean(ours);
    }

    [QemuFact]
    public void Compare_strict_reports_what_qemu_img_compare_s_reports()
    {
        string a = Image("a.qcow2", "compat=1.1", "write -P 1 0 64k");
        string b = Image("b.qcow2", "compat=1.1", "write -P 1 0 64k", "write -z 1M 64k");
        string c = Image("c.qcow2", "compat=1.1", "write -P 1 0 32k", "write -P 1 32k 32k");
        string d = Image("d.qcow2", "compat=1.1", "write -P 1 0 64k", "write -P 0 2M 4k");
        string e = _dir.File("e.qcow2");
        Qemu("create", "-q", "-f", "qcow2", e, "20M");
        foreach (var (x, y) in new[] { (a, b), (b, a), (a, c), (a, d), (a, e), (a, a) })
        {
            var q = QemuTools.QemuImg("compare", "-s", x, y);
            var o = QemuTools.Q2a("compare", "-s", x, y);
            Assert.Equal((q.ExitCode, q.StdOut), (o.ExitCode, o.StdOut));
        }
    }

    [QemuFact]
    public void Create_preallocation_falloc_and_full_lay_out_the_image_as_qemu_img_does()
    {
        foreach (var mode in new[] { "falloc", "full" })
        {
            string theirs = _dir.File($"q-{mode}.qcow2"), ours = _dir.File($"o-{mode}.qcow2");
            Qemu("create", "-q", "-f", "qcow2", "-o", $"preallocation={mode}", theirs, "8M");
            QemuTools.Q2a("create", "-q", "-f", "qcow2", "-o", $"preallocation={mode}", ours, "8M").EnsureSuccess();
            QemuTools.AssertCheckClean(ours);
            Assert.Equal(QemuTools.QemuImg("map", "--output=json", theirs).StdOut, QemuTools.QemuImg("map", "--output=json", ours).StdOut);
            Assert.True(new FileInfo(ours).Length >= 8 << 20);
        }
    }
}
