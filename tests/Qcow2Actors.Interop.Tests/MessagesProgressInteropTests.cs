using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// The issue 14 audit's message and progress divergences, run beside qemu-img 7.2 with the same inputs:
/// a missing image or backing file and a missing <c>-l</c> snapshot give qemu-img's first error line
/// (and exit code) on every verb, and <c>-p</c> prints the same progress lines, byte for byte.
/// </summary>
public sealed class MessagesProgressInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string FirstLine(string stderr, string prefix)
    {
        var line = stderr.Split('\n')[0].Trim();
        return line.StartsWith(prefix, StringComparison.Ordinal) ? line[prefix.Length..] : line;
    }

    // stdout exactly as written: QemuTools.Run reads lines, which turns progress's carriage returns into newlines.
    private static QemuTools.Result RunRaw(bool q2a, IEnumerable<string> args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(q2a ? "dotnet" : QemuTools.Find("qemu-img") ?? "qemu-img")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (q2a) psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "q2a.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), $"{string.Join(' ', args)} did not finish");
        return new QemuTools.Result(p.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    private static void SameRefusal(params string[] args)
    {
        var q = QemuTools.QemuImg(args);
        var o = QemuTools.Q2a(args);
        Assert.True(q.ExitCode != 0 && q.ExitCode == o.ExitCode, $"{string.Join(' ', args)}: qemu-img {q.ExitCode}, q2a {o.ExitCode} {o.StdErr}");
        Assert.Equal(FirstLine(q.StdErr, "qemu-img: "), FirstLine(o.StdErr, "q2a: "));
    }

    [QemuFact]
    public void A_missing_image_is_named_as_qemu_img_names_it_on_every_verb()
    {
        // Relative (as typed, not made absolute) and absolute names; nothing is created for either.
        foreach (var missing in new[] { $"nofile-{Guid.NewGuid():N}", _dir.File("nofile") })
        {
            string img = _dir.File("ok.qcow2");
            if (!File.Exists(img)) Qemu("create", "-q", "-f", "qcow2", img, "1M");
            SameRefusal("info", missing);
            SameRefusal("check", missing);
            SameRefusal("map", missing);
            SameRefusal("measure", "-O", "qcow2", missing);
            SameRefusal("compare", missing, img);
            SameRefusal("compare", img, missing);
            SameRefusal("convert", "-O", "qcow2", missing, _dir.File("out.qcow2"));
            SameRefusal("amend", "-o", "compat=1.1", missing);
            SameRefusal("resize", missing, "2M");
            SameRefusal("snapshot", "-l", missing);
            SameRefusal("commit", missing);
            SameRefusal("rebase", "-u", "-b", "", missing);
            SameRefusal("dd", "if=" + missing, "of=" + _dir.File("dd.out"));
            SameRefusal("bench", "-c", "1", missing);
            SameRefusal("bitmap", "--add", missing, "b0");
        }
    }

    [QemuFact]
    public void A_missing_backing_file_and_a_missing_snapshot_are_refused_in_qemu_img_s_words()
    {
        string top = _dir.File("top.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", top, "1M");
        SameRefusal("map", top);
        SameRefusal("check", top);
        SameRefusal("compare", top, top);
        SameRefusal("convert", "-O", "raw", top, _dir.File("flat.raw"));

        string img = _dir.File("snap.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "1M");
        Qemu("snapshot", "-c", "s1", img);
        SameRefusal("convert", "-l", "nosnap", "-O", "qcow2", img, _dir.File("c1.qcow2"));
        SameRefusal("convert", "-l", "snapshot.name=nosnap", "-O", "qcow2", img, _dir.File("c2.qcow2"));
    }

    private string Source()
    {
        string img = _dir.File("src.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "16M");
        Io(img, ["write -P 1 0 3M", "write -P 2 8M 64k", "write -z 12M 1M"]);
        return img;
    }

    private string Overlay(string backing)
    {
        string top = _dir.File($"top-{Guid.NewGuid():N}.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", top);
        Io(top, ["write -P 3 1M 3M", "write -P 4 10M 1M"]);
        return top;
    }

    /// <summary>Runs the verb on copies (IMG, TOP in an argument) and asserts the same exit code and stdout (the progress lines).</summary>
    private void SameProgress(string image, params string[] args)
    {
        string theirs = _dir.File($"q-{Guid.NewGuid():N}"), ours = _dir.File($"o-{Guid.NewGuid():N}");
        File.Copy(image, theirs);
        File.Copy(image, ours);
        string[] Args(string img, string output) =>
            [.. args.Select(a => a.Replace("IMG", img, StringComparison.Ordinal).Replace("OUT", output, StringComparison.Ordinal))];
        var q = RunRaw(false, Args(theirs, theirs + ".out"));
        var o = RunRaw(true, Args(ours, ours + ".out"));
        Assert.True(q.ExitCode == o.ExitCode, $"{string.Join(' ', args)}: qemu-img {q.ExitCode} {q.StdErr}; q2a {o.ExitCode} {o.StdErr}");
        Assert.Equal(q.StdOut, o.StdOut);
    }

    [QemuFact]
    public void Convert_rebase_and_amend_print_qemu_img_s_progress_lines()
    {
        string src = Source();
        SameProgress(src, "convert", "-p", "-O", "qcow2", "IMG", "OUT");
        SameProgress(src, "convert", "-p", "-O", "qcow2", "-S", "0", "IMG", "OUT");
        SameProgress(src, "convert", "-p", "-O", "raw", "IMG", "OUT");
        string top = Overlay(src);
        SameProgress(top, "convert", "-p", "-O", "qcow2", "IMG", "OUT");
        SameProgress(top, "convert", "-p", "-O", "qcow2", "-B", src, "-F", "qcow2", "IMG", "OUT");

        string empty = _dir.File("empty.qcow2");
        Qemu("create", "-q", "-f", "qcow2", empty, "16M");
        SameProgress(top, "rebase", "-p", "-b", empty, "-F", "qcow2", "IMG");
        SameProgress(top, "rebase", "-p", "-b", "", "IMG");
        SameProgress(top, "rebase", "-p", "-u", "-b", empty, "-F", "qcow2", "IMG");

        foreach (var option in new[] { "compat=1.1", "lazy_refcounts=on", "compat=0.10", "size=32M", "refcount_bits=3", "compat=2", "foo=1", "backing_file=x" })
            SameProgress(src, "amend", "-p", "-o", option, "IMG");
    }

    [QemuFact]
    public void Compare_prints_qemu_img_s_progress_lines()
    {
        string src = Source();
        string copy = _dir.File("copy.qcow2");
        QemuTools.QemuImg("convert", "-O", "qcow2", src, copy).EnsureSuccess();
        foreach (var (a, b) in new[] { (src, copy), (src, Overlay(src)) })
        {
            var q = RunRaw(false, ["compare", "-p", a, b]);
            var o = RunRaw(true, ["compare", "-p", a, b]);
            Assert.Equal(q.ExitCode, o.ExitCode);
            Assert.Equal(q.StdOut, o.StdOut);
        }
    }

    [QemuFact]
    public void Convert_concatenates_several_sources_as_qemu_img_convert_does()
    {
        string src = Source();
        string top = Overlay(src);
        string raw = _dir.File("small.raw");
        Qemu("create", "-q", "-f", "raw", raw, "3M");
        Io(raw, ["write -P 9 1M 512k"], "raw");
        foreach (var (format, sources) in new (string, string[])[]
        {
            ("qcow2", [src, top]),
            ("raw", [src, raw, top]),
            ("qcow2", [raw, src]),
        })
        {
            foreach (var extra in new[] { Array.Empty<string>(), ["-S", "0"], ["-c"] })
            {
                if (format == "raw" && extra.Contains("-c")) continue;
                string theirs = _dir.File($"cq-{Guid.NewGuid():N}"), ours = _dir.File($"co-{Guid.NewGuid():N}");
                var q = RunRaw(false, ["convert", "-p", "-O", format, .. extra, .. sources, theirs]);
                var o = RunRaw(true, ["convert", "-p", "-O", format, .. extra, .. sources, ours]);
                Assert.True(q.ExitCode == 0 && o.ExitCode == 0, $"qemu-img {q.ExitCode} {q.StdErr}; q2a {o.ExitCode} {o.StdErr}");
                Assert.Equal(q.StdOut, o.StdOut);
                var cmp = QemuTools.QemuImg("compare", "-s", "-f", format, "-F", format, theirs, ours);
                Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
                if (format == "qcow2") QemuTools.AssertCheckClean(ours);
            }
        }
        SameRefusal("convert", "-l", "s1", "-O", "qcow2", src, top, _dir.File("r1"));
        SameRefusal("convert", "-B", src, "-F", "qcow2", "-O", "qcow2", src, top, _dir.File("r2"));
        SameRefusal("convert", "--bitmaps", "-O", "qcow2", src, top, _dir.File("r3"));
        SameRefusal("convert", "-O", "qcow2", src, _dir.File("missing.qcow2"), _dir.File("r4"));
    }

    [QemuFact]
    public void Convert_into_a_target_given_by_options_writes_what_qemu_img_writes()
    {
        string src = Source();
        foreach (var (format, driver) in new[] { ("qcow2", "driver=qcow2,"), ("raw", "driver=raw,"), ("qcow2", "") })
        {
            string theirs = _dir.File($"tq-{Guid.NewGuid():N}"), ours = _dir.File($"to-{Guid.NewGuid():N}");
            Qemu("create", "-q", "-f", format, theirs, "16M");
            File.Copy(theirs, ours);
            var q = QemuTools.QemuImg("convert", "-n", "--target-image-opts", src, $"{driver}file.filename={theirs}");
            var o = QemuTools.Q2a("convert", "-n", "--target-image-opts", src, $"{driver}file.filename={ours}");
            Assert.True(q.ExitCode == 0 && o.ExitCode == 0, $"qemu-img {q.ExitCode} {q.StdErr}; q2a {o.ExitCode} {o.StdErr}");
            var cmp = QemuTools.QemuImg("compare", "-f", format, "-F", format, theirs, ours);
            Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
            if (format == "qcow2") QemuTools.AssertCheckClean(ours);
        }
        SameRefusal("convert", "--target-image-opts", "-O", "qcow2", src, $"driver=qcow2,file.filename={_dir.File("x.qcow2")}");
        SameRefusal("convert", "-n", "--target-image-opts", src, $"driver=qcow2,file.filename={_dir.File("missing.qcow2")}");
        SameRefusal("convert", "-n", "--target-image-opts", "-O", "qcow2", src, $"driver=qcow2,file.filename={src}");
    }

    [QemuFact]
    public void Applying_a_snapshot_to_an_image_with_bitmaps_is_refused_as_by_qemu_img()
    {
        string img = _dir.File("bitmaps.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "4M");
        Io(img, ["write -P 1 0 64k"]);
        Qemu("snapshot", "-c", "s1", img);
        Qemu("bitmap", "--add", img, "b0");
        Qemu("bitmap", "--disable", img, "b0");
        string before = QemuTools.QemuImg("map", "--output=json", img).EnsureSuccess().StdOut;
        SameRefusal("snapshot", "-a", "s1", img);
        SameRefusal("snapshot", "-a", "nosnap", img);
        Assert.Equal(before, QemuTools.QemuImg("map", "--output=json", img).EnsureSuccess().StdOut);
        QemuTools.AssertCheckClean(img);
    }
}
