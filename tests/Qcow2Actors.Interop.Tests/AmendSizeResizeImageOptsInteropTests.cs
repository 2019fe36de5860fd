using Qcow2Actors.Interop.Tests.Chain;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// What the issue 14 audit found missing, run beside qemu-img 7.2 with the same inputs: amend's
/// size=, resize of raw images and --preallocation, and --object/--image-opts/json:{} on the verbs
/// that rewrite a host file (amend, commit, rebase, resize) or read one (measure, dd, bench). Each
/// case: the same exit code and stdout, q2a's one error line starting with qemu-img's first line,
/// the same image content (qemu-img compare) and a clean qemu-img check.
/// </summary>
public sealed class AmendSizeResizeImageOptsInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Image(string name, string format = "qcow2")
    {
        string path = _dir.File(name);
        Qemu("create", "-q", "-f", format, path, "16M");
        Io(path, ["write -P 1 0 1M", "write -P 2 10M 1M", "write -P 3 12M 64k"], format);
        return path;
    }

    private static string FirstLine(string stderr, string prefix)
    {
        var line = stderr.Split('\n')[0].Trim();
        return line.StartsWith(prefix, StringComparison.Ordinal) ? line[prefix.Length..] : line;
    }

    /// <summary>Runs the verb on a copy for each tool (IMG in an argument is the copy's path) and asserts the same outcome.</summary>
    private void Same(string format, string source, params string[] args)
    {
        string theirs = _dir.File($"theirs-{Guid.NewGuid():N}"), ours = _dir.File($"ours-{Guid.NewGuid():N}");
        File.Copy(source, theirs);
        File.Copy(source, ours);
        string[] Args(string img) => [.. args.Select(a => a.Replace("IMG", img, StringComparison.Ordinal))];
        var q = QemuTools.QemuImg(Args(theirs));
        var o = QemuTools.Q2a(Args(ours));
        Assert.True(q.ExitCode == o.ExitCode, $"{string.Join(' ', args)}: qemu-img {q.ExitCode} ({q.StdErr}), q2a {o.ExitCode} ({o.StdErr})");
        if (!args.Contains("bench")) Assert.Equal(q.StdOut.Replace(theirs, "IMG", StringComparison.Ordinal), o.StdOut.Replace(ours, "IMG", StringComparison.Ordinal));
        if (q.ExitCode != 0)
        {
            Assert.StartsWith(FirstLine(q.StdErr, "qemu-img: ").Replace(theirs, "IMG", StringComparison.Ordinal),
                FirstLine(o.StdErr, "q2a: ").Replace(ours, "IMG", StringComparison.Ordinal), StringComparison.Ordinal);
            Assert.Single(o.StdErr.Trim().Split('\n'));
        }
        Assert.Equal(new FileInfo(theirs).Length > 0, new FileInfo(ours).Length > 0);
        var cmp = QemuTools.QemuImg("compare", "-f", format, "-F", format, theirs, ours);
        Assert.True(cmp.ExitCode == 0, $"{string.Join(' ', args)}: {cmp.StdOut}{cmp.StdErr}");
        if (format == "qcow2") QemuTools.AssertCheckClean(ours);
        var vsize = (string img) => QemuTools.QemuImg("info", "-f", format, "--output=json", img).EnsureSuccess().StdOut.Split('\n').First(l => l.Contains("\"virtual-size\"", StringComparison.Ordinal));
        Assert.Equal(vsize(theirs), vsize(ours));
    }

    [QemuFact]
    public void Amend_size_grows_and_shrinks_the_image_as_qemu_img_amend_does()
    {
        string img = Image("a.qcow2");
        Same("qcow2", img, "amend", "-o", "size=32M", "IMG");
        Same("qcow2", img, "amend", "-o", "size=11M", "IMG");
        Same("qcow2", img, "amend", "-o", "size=20M,compat=0.10", "IMG");
        Same("qcow2", img, "amend", "-o", "lazy_refcounts=on,size=8M", "IMG");
        Same("qcow2", img, "amend", "-o", "size=0", "IMG");
        Same("qcow2", img, "amend", "-o", "size=1000", "IMG");
        Same("qcow2", img, "amend", "-o", "size=x", "IMG");
        Same("qcow2", img, "amend", "-o", "backing_file=b.qcow2", "IMG");
        Same("qcow2", img, "amend", "-o", "encryption=on", "IMG");
        // With an internal snapshot the shrink keeps the snapshot's data (qemu-img allows it too).
        QemuTools.QemuImg("snapshot", "-c", "s1", img).EnsureSuccess();
        Same("qcow2", img, "amend", "-o", "size=4M", "IMG");
        var help = QemuTools.Q2a("amend", "-o", "help", img).EnsureSuccess().StdOut;
        Assert.Contains("  size=<size>            - Virtual disk size\n", help, StringComparison.Ordinal);
    }

    [QemuFact]
    public void Resize_takes_raw_images_and_preallocation_modes_as_qemu_img_resize_does()
    {
        string raw = Image("r.raw", "raw"), img = Image("r.qcow2");
        Same("raw", raw, "resize", "-f", "raw", "IMG", "20M");
        Same("raw", raw, "resize", "-f", "raw", "IMG", "8M");
        Same("raw", raw, "resize", "-f", "raw", "--shrink", "IMG", "11M");
        Same("raw", raw, "resize", "-f", "raw", "--preallocation=full", "IMG", "20M");
        Same("raw", raw, "resize", "-f", "raw", "--preallocation=falloc", "IMG", "+3M");
        Same("raw", raw, "resize", "-f", "raw", "--preallocation=metadata", "IMG", "20M");
        Same("raw", raw, "resize", "-f", "raw", "--preallocation=full", "--shrink", "IMG", "1M");
        Same("qcow2", img, "resize", "--preallocation=off", "IMG", "20M");
        Same("qcow2", img, "resize", "--preallocation=bogus", "IMG", "20M");
        Same("qcow2", img, "resize", "IMG", "x");
        // qemu allocates the new qcow2 clusters; q2a refuses in one line rather than pretend.
        var full = QemuTools.Q2a("resize", "--preallocation=full", img, "20M");
        Assert.Equal((1, "q2a: Preallocation mode 'full' is not supported by q2a resize for qcow2 images (create the image with -o preallocation=full instead)"),
            (full.ExitCode, full.StdErr.Trim()));
    }

    [QemuFact]
    public void Verbs_on_host_files_take_object_image_opts_and_json_as_qemu_img_does()
    {
        string img = Image("o.qcow2");
        string opts = "driver=qcow2,file.filename=IMG";
        string json = """json:{"driver":"qcow2","file":{"driver":"file","filename":"IMG"}}""";
        string secret = "secret,id=s0,data=x";
        Same("qcow2", img, "amend", "--object", secret, "--image-opts", "-o", "compat=0.10", opts);
        Same("qcow2", img, "amend", "-o", "lazy_refcounts=on", json);
        Same("qcow2", img, "resize", "--object", secret, "--image-opts", opts, "20M");
        Same("qcow2", img, "resize", json, "24M");
        Same("qcow2", img, "measure", "-O", "qcow2", "--image-opts", opts);
        Same("qcow2", img, "measure", "--object", secret, "-O", "qcow2", "--output=json", json);
        Same("qcow2", img, "bench", "-c", "10", "--image-opts", opts);
        Same("qcow2", img, "commit", "--image-opts", "-f", "qcow2", opts);
        // dd's if= in --image-opts spelling; the outputs are compared as raw files.
        string ours = _dir.File("dd-ours.raw"), theirs = _dir.File("dd-theirs.raw");
        QemuTools.QemuImg("dd", "--image-opts", $"if=driver=qcow2,file.filename={img}", $"of={theirs}", "bs=64k", "count=20").EnsureSuccess();
        QemuTools.Q2a("dd", "--image-opts", $"if=driver=qcow2,file.filename={img}", $"of={ours}", "bs=64k", "count=20").EnsureSuccess();
        QemuTools.QemuImg("compare", "-f", "raw", "-F", "raw", theirs, ours).EnsureSuccess();
    }

    [QemuFact]
    public void Commit_and_rebase_take_image_opts_for_the_top_image()
    {
        string q = Path.Combine(_dir.Path, "qemu"), o = Path.Combine(_dir.Path, "q2a");
        foreach (var (verb, args) in new (string, string[])[] { ("commit", []), ("rebase", ["-b", ChainImages.Base, "-F", "qcow2"]) })
        {
            ChainImages.Make(q);
            ChainImages.Make(o);
            var theirs = QemuTools.QemuImg([verb, "--object", "secret,id=s0,data=x", .. args, "--image-opts", $"driver=qcow2,file.filename={Path.Combine(q, ChainImages.Top)}"]);
            var ours = QemuTools.Q2a([verb, "--object", "secret,id=s0,data=x", .. args, "--image-opts", $"driver=qcow2,file.filename={Path.Combine(o, ChainImages.Top)}"]);
            Assert.Equal((0, theirs.StdOut), (ours.ExitCode, ours.StdOut));
            foreach (var name in new[] { ChainImages.Top, ChainImages.Mid, ChainImages.Base })
            {
                ChainImages.AssertSameContent(Path.Combine(q, name), Path.Combine(o, name));
                ChainImages.AssertCheckClean(Path.Combine(o, name));
                Assert.Equal(ChainImages.Backing(Path.Combine(q, name)), ChainImages.Backing(Path.Combine(o, name)));
            }
        }
        // An NBD export is not a file these verbs can rewrite: one line saying so.
        var nbd = QemuTools.Q2a("commit", "nbd://127.0.0.1:1/x");
        Assert.Equal((1, "q2a: Could not open 'nbd://127.0.0.1:1/x': q2a commit works on host files only, not on an NBD export"), (nbd.ExitCode, nbd.StdErr.Trim()));
    }

    [QemuFact]
    public void A_safe_rebase_onto_a_file_read_as_raw_keeps_what_the_image_reads()
    {
        // qemu-img 7.2 finds base.qcow2 in the old chain by name and skips copying what the mid image
        // does not allocate, although -F raw makes the new backing file read differently: its result
        // reads the qcow2 header at offset 0. q2a compares the two views and keeps the content.
        ChainImages.Make(_dir.Path);
        string top = _dir.File(ChainImages.Top);
        var before = ChainImages.View(top, "before.raw");
        QemuTools.Q2a("rebase", "-b", ChainImages.Base, "-F", "raw", top).EnsureSuccess();
        Assert.Equal((ChainImages.Base, "raw"), ChainImages.Backing(top));
        ChainImages.AssertSameContent(top, before);
        ChainImages.AssertCheckClean(top);
    }
}
