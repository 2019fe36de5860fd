using Qcow2Actors.Cli.Commands;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>Command lines of rebase, commit, dd and bench: what is refused, in one line, and how operands read.</summary>
public sealed class ChainCommandsParsingTests
{
    private static string? Problem(params string[] args) => ParseErrors.Describe(Verbs.Root().Parse(args), args);

    [Theory]
    [InlineData("q2a rebase: unrecognized option '-x'", "rebase", "-x", "top.qcow2")]
    [InlineData("q2a commit: unrecognized option '--bogus'", "commit", "--bogus", "top.qcow2")]
    [InlineData("q2a dd: unrecognized option '-q'", "dd", "-q", "if=a", "of=b")]
    [InlineData("q2a bench: unrecognized option '--drain'", "bench", "--drain", "x")]
    [InlineData("q2a: unrecognized command 'rebse' (q2a --help lists them)", "rebse", "x")]
    public void An_unknown_option_or_verb_is_one_line(string expected, params string[] args) =>
        Assert.Equal(expected, Problem(args));

    [Theory]
    [InlineData("rebase", "-u", "-b", "", "-F", "qcow2", "-p", "-U", "top.qcow2")]
    [InlineData("rebase", "-b", "base.qcow2", "-F", "qcow2", "-t", "none", "-T", "writeback", "-q", "top.qcow2")]
    [InlineData("commit", "-b", "base.qcow2", "-d", "-p", "-q", "-t", "none", "-f", "qcow2", "top.qcow2")]
    [InlineData("dd", "-U", "-f", "qcow2", "-O", "raw", "bs=64k", "count=2", "skip=1", "if=a", "of=b")]
    [InlineData("bench", "-c", "10", "-d", "2", "-w", "--flush-interval=4", "--no-drain", "-o", "1M", "--pattern=0xab", "-s", "8k", "-S", "16k", "-t", "none", "-n", "-i", "native", "-q", "x")]
    public void Every_qemu_img_option_of_the_verbs_parses(params string[] args) => Assert.Null(Problem(args));

    [Fact]
    public void Dd_operands_read_as_qemu_img_reads_them()
    {
        var o = DdCommand.Operands.Parse(["if=a", "of=b", "bs=64k", "count=1k", "skip=2", "if=c"]);
        Assert.Equal(new DdCommand.Operands("c", "b", 65536, 1024, 2), o);
        Assert.Equal(512, DdCommand.Operands.Parse(["if=a", "of=b"]).BlockSize);
    }

    [Theory]
    [InlineData("unrecognized operand foo", "if=a", "of=b", "foo=1")]
    [InlineData("unrecognized operand p2", "if=a", "p2")]
    [InlineData("Must specify both input and output files", "if=a")]
    [InlineData("Invalid bs specified. Must be between 1 and 2147483647.", "if=a", "of=b", "bs=0")]
    [InlineData("Invalid bs specified. Must be between 1 and 2147483647.", "if=a", "of=b", "bs=3G")]
    [InlineData("Invalid count specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", "if=a", "of=b", "count=-1")]
    [InlineData("Invalid skip specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", "if=a", "of=b", "skip=x")]
    public void Bad_dd_operands_are_refused_in_qemu_imgs_words(string expected, params string[] operands) =>
        Assert.Equal(expected, Assert.Throws<CliException>(() => DdCommand.Operands.Parse(operands)).Message);

    [Fact]
    public void Rebase_compares_sector_runs_as_qemu_img()
    {
        var a = new byte[1536 + 100];
        var b = (byte[])a.Clone();
        b[600] = 1; // the second sector differs
        Assert.Equal(512, RebaseCommand.SameRun(a, b, out bool differ));
        Assert.False(differ);
        Assert.Equal(512, RebaseCommand.SameRun(a.AsSpan(512), b.AsSpan(512), out differ));
        Assert.True(differ);
        // The rest agrees, the short last sector included.
        Assert.Equal(612, RebaseCommand.SameRun(a.AsSpan(1024), b.AsSpan(1024), out differ));
        Assert.False(differ);
    }

    [Theory]
    [InlineData("dir/top.qcow2", "base.qcow2", "dir/base.qcow2")]
    [InlineData("top.qcow2", "base.qcow2", "base.qcow2")]
    [InlineData("dir/top.qcow2", "/abs/base.qcow2", "/abs/base.qcow2")]
    public void Backing_names_are_relative_to_the_image_that_names_them(string overlay, string name, string expected) =>
        Assert.Equal(expected, BackingChain.Resolve(overlay, name));
}
