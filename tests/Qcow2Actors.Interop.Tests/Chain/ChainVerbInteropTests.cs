using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Chain;

/// <summary>
/// rebase, commit, dd and bench run on q2a and on qemu-img 7.2 with the same inputs: the same exit
/// code and output, images with the same content (qemu-img compare), the same backing names in
/// qemu-img info's JSON, and every image q2a wrote check-clean.
/// </summary>
public sealed class ChainVerbInteropTests : IDisposable
{
    private readonly TempDir _dir = new();
    private string Ours => Path.Combine(_dir.Path, "q2a");
    private string Theirs => Path.Combine(_dir.Path, "qemu");

    public void Dispose() => _dir.Dispose();

    private (QemuTools.Result Ours, QemuTools.Result Theirs) RunBoth(string verb, string[] args, string image)
    {
        ChainImages.Make(Ours);
        ChainImages.Make(Theirs);
        var ours = QemuTools.Q2a([verb, .. args, Path.Combine(Ours, image)]);
        var theirs = QemuTools.QemuImg([verb, .. args, Path.Combine(Theirs, image)]);
        Assert.True(ours.ExitCode == theirs.ExitCode, $"q2a exit {ours.ExitCode} ({ours.StdErr}), qemu-img exit {theirs.ExitCode} ({theirs.StdErr})");
        return (ours, theirs);
    }

    private void AssertSameImages(params string[] names)
    {
        foreach (var name in names)
        {
            string ours = Path.Combine(Ours, name), theirs = Path.Combine(Theirs, name);
            ChainImages.AssertCheckClean(ours);
            ChainImages.AssertSameContent(ours, theirs);
            Assert.Equal(ChainImages.Backing(theirs), ChainImages.Backing(ours));
        }
    }

    [QemuTheory]
    [InlineData("-b", "base.qcow2", "-F", "qcow2")]
    [InlineData("-b", "")]
    [InlineData("-u", "-b", "base.qcow2", "-F", "qcow2")]
    [InlineData("-u")]
    public void Rebase_leaves_the_same_image_as_qemu_img(params string[] args)
    {
        var (ours, theirs) = RunBoth("rebase", args, ChainImages.Top);
        Assert.Equal(0, ours.ExitCode);
        Assert.Equal(theirs.StdOut, ours.StdOut);
        AssertSameImages(ChainImages.Top, ChainImages.Mid, ChainImages.Base);
    }

    [QemuFact]
    public void A_safe_rebase_keeps_what_the_image_reads()
    {
        ChainImages.Make(Ours);
        var top = Path.Combine(Ours, ChainImages.Top);
        var before = ChainImages.View(top, "before.raw");
        QemuTools.Q2a("rebase", "-b", ChainImages.Base, "-F", "qcow2", top).EnsureSuccess();
        ChainImages.AssertSameContent(top, before);
        Assert.Equal((ChainImages.Base, "qcow2"), ChainImages.Backing(top));
    }

    [QemuTheory]
    [InlineData("-b", "base.qcow2")]
    [InlineData("-b", "nope.qcow2", "-F", "qcow2")]
    [InlineData("-u", "-b", "base.qcow2")]
    [InlineData("-b", "mid.qcow2", "-F", "qcow2", "-t", "bogus")]
    public void Rebase_refusals_match_qemu_img(params string[] args)
    {
        var (ours, theirs) = RunBoth("rebase", args, ChainImages.Top);
        Assert.Equal(1, ours.ExitCode);
        Assert.Equal(Message(theirs.StdErr).Replace(Theirs, "DIR", StringComparison.Ordinal), Message(ours.StdErr).Replace(Ours, "DIR", StringComparison.Ordinal));
        AssertSameImages(ChainImages.Top);
    }

    [QemuTheory]
    [InlineData]
    [InlineData("-d")]
    [InlineData("-b", "base.qcow2")]
    [InlineData("-b", "mid.qcow2", "-p")]
    public void Commit_leaves_the_same_images_as_qemu_img(params string[] args)
    {
        var (ours, theirs) = RunBoth("commit", args, ChainImages.Top);
        Assert.Equal(0, ours.ExitCode);
        Assert.EndsWith("Image committed.\n", ours.StdOut, StringComparison.Ordinal);
        if (!args.Contains("-p")) Assert.Equal(theirs.StdOut, ours.StdOut);
        AssertSameImages(ChainImages.Top, ChainImages.Mid, ChainImages.Base);
        // Emptied as qemu-img empties it: nothing allocated in the top image itself.
        if (args.Length == 0)
            Assert.DoesNotContain("top.qcow2", QemuTools.QemuImg("map", Path.Combine(Ours, ChainImages.Top)).EnsureSuccess().StdOut, StringComparison.Ordinal);
    }

    /// <summary>A raw base (4 MiB) under a qcow2 top (6 MiB: the base grows) in <paramref name="dir"/>, made by qemu-img.</summary>
    private static void MakeRawChain(string dir)
    {
        Directory.CreateDirectory(dir);
        string P(string name) => Path.Combine(dir, name);
        QemuTools.QemuImg("create", "-q", "-f", "raw", P("base.raw"), "4M").EnsureSuccess();
        QemuTools.QemuIo("-f", "raw", "-c", "write -P 0x11 0 2M", P("base.raw")).EnsureSuccess();
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", P(ChainImages.Top), "6M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 0x33 512k 1M", "-c", "write -z 1600k 64k", "-c", "write -P 0x34 7000 1000", "-c", "write -P 0x35 5M 100k",
            P(ChainImages.Top)).EnsureSuccess();
    }

    [QemuFact]
    public void Commit_into_a_raw_base_leaves_what_qemu_img_leaves()
    {
        MakeRawChain(Ours);
        MakeRawChain(Theirs);
        var before = ChainImages.View(Path.Combine(Ours, ChainImages.Top), "before.raw");
        var ours = QemuTools.Q2a("commit", Path.Combine(Ours, ChainImages.Top));
        var theirs = QemuTools.QemuImg("commit", Path.Combine(Theirs, ChainImages.Top));
        Assert.True(ours.ExitCode == 0 && theirs.ExitCode == 0, $"q2a exit {ours.ExitCode} ({ours.StdErr}), qemu-img exit {theirs.ExitCode} ({theirs.StdErr})");
        Assert.Equal(theirs.StdOut, ours.StdOut);
        string ourBase = Path.Combine(Ours, "base.raw"), theirBase = Path.Combine(Theirs, "base.raw");
        Assert.Equal(new FileInfo(theirBase).Length, new FileInfo(ourBase).Length);
        var cmp = QemuTools.QemuImg("compare", "-f", "raw", "-F", "raw", ourBase, theirBase);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
        // The top, emptied, reads the same through the base as it did before.
        ChainImages.AssertSameContent(Path.Combine(Ours, ChainImages.Top), before);
        ChainImages.AssertSameContent(Path.Combine(Ours, ChainImages.Top), Path.Combine(Theirs, ChainImages.Top));
        ChainImages.AssertCheckClean(Path.Combine(Ours, ChainImages.Top));
    }

    [QemuTheory]
    [InlineData("-b", "nope")]
    [InlineData("-b", "top.qcow2")]
    public void Commit_refusals_match_qemu_img(params string[] args)
    {
        var (ours, theirs) = RunBoth("commit", args, ChainImages.Top);
        Assert.Equal(1, ours.ExitCode);
        // qemu-img names the image as given; both were given full paths in different directories.
        Assert.Equal(Message(theirs.StdErr).Replace(Theirs, "DIR", StringComparison.Ordinal), Message(ours.StdErr).Replace(Ours, "DIR", StringComparison.Ordinal));
    }

    [QemuFact]
    public void Commit_of_an_image_without_backing_file_is_refused_as_by_qemu_img()
    {
        var (ours, theirs) = RunBoth("commit", [], ChainImages.Base);
        Assert.Equal(1, ours.ExitCode);
        Assert.Equal(Message(theirs.StdErr), Message(ours.StdErr));
    }

    [QemuTheory]
    [InlineData("raw", "bs=64k", "count=10", "skip=2")]
    [InlineData("raw", "bs=1000")]
    [InlineData("raw", "skip=100000")]
    [InlineData("qcow2", "bs=1M", "count=3", "skip=1")]
    public void Dd_writes_what_qemu_img_dd_writes(string outFormat, params string[] operands)
    {
        ChainImages.Make(Ours);
        var top = Path.Combine(Ours, ChainImages.Top);
        string ours = Path.Combine(Ours, "dd." + outFormat), theirs = Path.Combine(Ours, "qemu-dd." + outFormat);
        var a = QemuTools.Q2a(["dd", "-O", outFormat, $"if={top}", $"of={ours}", .. operands]);
        var b = QemuTools.QemuImg(["dd", "-O", outFormat, $"if={top}", $"of={theirs}", .. operands]);
        Assert.Equal(b.ExitCode, a.ExitCode);
        Assert.Equal(Message(b.StdErr), Message(a.StdErr));
        Assert.Equal(new FileInfo(theirs).Length > 0, new FileInfo(ours).Length > 0);
        var cmp = QemuTools.QemuImg("compare", "-f", outFormat, "-F", outFormat, ours, theirs);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
        if (outFormat == "qcow2") ChainImages.AssertCheckClean(ours);
    }

    [QemuFact]
    public void Bench_prints_qemu_img_benchs_lines_and_writes_the_pattern()
    {
        ChainImages.Make(Ours);
        ChainImages.Make(Theirs);
        string[] args = ["bench", "-w", "-c", "200", "-d", "8", "-s", "8k", "-S", "16k", "-o", "64k", "--flush-interval=16", "--pattern=0x5a"];
        var ours = QemuTools.Q2a([.. args, Path.Combine(Ours, ChainImages.Top)]).EnsureSuccess();
        var theirs = QemuTools.QemuImg([.. args, Path.Combine(Theirs, ChainImages.Top)]).EnsureSuccess();
        static string WithoutTime(string s) => System.Text.RegularExpressions.Regex.Replace(s, @"in \d+\.\d{3} seconds", "in T seconds");
        Assert.Equal(WithoutTime(theirs.StdOut), WithoutTime(ours.StdOut));
        Assert.Matches(@"Run completed in \d+\.\d{3} seconds\.", ours.StdOut);
        AssertSameImages(ChainImages.Top);
        var refused = QemuTools.Q2a("bench", "-c", "10", "--flush-interval", "10", Path.Combine(Ours, ChainImages.Top));
        Assert.Equal((1, "q2a: --flush-interval is only available in write tests"), (refused.ExitCode, refused.StdErr.Trim()));
    }

    // The first line of an error, without the tool's name and qemu-img's usage hint.
    private static string Message(string stderr)
    {
        var line = stderr.Split('\n')[0].Trim();
        foreach (var prefix in new[] { "qemu-img: ", "q2a: " })
            if (line.StartsWith(prefix, StringComparison.Ordinal)) return line[prefix.Length..];
        return line;
    }
}
