using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// compare -p prints qemu-img's progress and result bytes; commit -r (rate limit) commits what
/// qemu-img commit -r commits and refuses a bad rate with qemu-img's message.
/// </summary>
public sealed class ProgressRateInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Compare_p_prints_what_qemu_img_prints(bool differ)
    {
        string a = _dir.File("a.qcow2"), b = _dir.File("b.qcow2");
        Qemu("create", "-q", "-f", "qcow2", a, "8M");
        Io(a, ["write -P 1 0 1M", "write -P 2 5M 64k"]);
        Qemu("convert", "-O", "qcow2", a, b);
        if (differ) Io(b, ["write -P 7 3M 4k"]);
        var theirs = QemuTools.QemuImg("compare", "-p", a, b);
        var ours = QemuTools.Q2a("compare", "-p", a, b);
        Assert.Equal(theirs.ExitCode, ours.ExitCode);
        // The runner reads lines (a carriage return ends one too): the progress steps, then the result.
        Assert.Equal(Results(theirs.StdOut), Results(ours.StdOut));
        Assert.StartsWith("    (0.00/100%)", ours.StdOut, StringComparison.Ordinal);
        if (!differ) Assert.Contains("    (100.00/100%)", ours.StdOut, StringComparison.Ordinal);
    }

    private static string[] Results(string stdout) =>
        [.. stdout.Split('\n').Where(l => l.Trim().Length > 0 && !l.EndsWith("/100%)", StringComparison.Ordinal))];

    [QemuFact]
    public void Commit_r_commits_what_qemu_img_commit_r_commits()
    {
        string[] bases = [_dir.File("ours-base.qcow2"), _dir.File("theirs-base.qcow2")];
        string[] tops = [_dir.File("ours.qcow2"), _dir.File("theirs.qcow2")];
        for (int i = 0; i < 2; i++)
        {
            Qemu("create", "-q", "-f", "qcow2", bases[i], "8M");
            Io(bases[i], ["write -P 1 0 8M"]);
            Qemu("create", "-q", "-f", "qcow2", "-b", bases[i], "-F", "qcow2", tops[i]);
            Io(tops[i], ["write -P 4 0 3M", "write -z 6M 1M"]);
        }
        QemuTools.Q2a("commit", "-r", "64M", tops[0]).EnsureSuccess();
        Qemu("commit", "-r", "64M", tops[1]);
        Assert.Equal(0, QemuTools.QemuImg("compare", bases[0], bases[1]).ExitCode);
        QemuTools.AssertCheckClean(bases[0]);
        var bad = QemuTools.Q2a("commit", "-r", "x", tops[0]);
        Assert.Equal(1, bad.ExitCode);
        Assert.Equal("q2a: Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
            bad.StdErr.Trim());
    }
}
