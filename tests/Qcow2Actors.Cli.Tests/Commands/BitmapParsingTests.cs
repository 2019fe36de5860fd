using Qcow2Actors.Cli.Commands;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>
/// How <c>q2a bitmap</c> reads its command line: actions in the order given (as qemu-img runs them),
/// and qemu-img 7.2's line for each command line it refuses before opening the image.
/// </summary>
public sealed class BitmapParsingTests
{
    private static (List<(string Op, string? Source)> Actions, long? Granularity, string Path, string Name) Plan(params string[] args) =>
        BitmapCommand.Plan(Verbs.Root(["bitmap", .. args]).Parse(["bitmap", .. args]));

    [Fact]
    public void Actions_keep_their_command_line_order_and_merge_keeps_its_source()
    {
        var plan = Plan("--clear", "--merge", "other", "-b", "src.qcow2", "--add", "-g", "4k", "img.qcow2", "b0");
        Assert.Equal([("clear", null), ("merge", "other"), ("add", null)], plan.Actions);
        Assert.Equal(4096, plan.Granularity);
        Assert.Equal(("img.qcow2", "b0"), (plan.Path, plan.Name));
        Assert.Null(Plan("--add", "-g", "0", "i", "b").Granularity);
    }

    [Theory]
    [InlineData("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge", "i", "b")]
    [InlineData("granularity only supported with --add", "--remove", "-g", "4k", "i", "b")]
    [InlineData("Invalid granularity specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", "--add", "-g", "abc", "i", "b")]
    [InlineData("Merge bitmap source file only supported with --merge", "--add", "-b", "x", "i", "b")]
    [InlineData("-F only supported with -b", "--merge", "s", "-F", "qcow2", "i", "b")]
    [InlineData("Expecting filename and bitmap name", "--add", "i")]
    [InlineData("Operation add on bitmap b failed: Can't store persistent bitmaps to 'i': Operation not supported", "--add", "-f", "raw", "i", "b")]
    public void A_bad_command_line_is_refused_with_qemu_img_words(string expected, params string[] args)
    {
        var ex = Assert.Throws<CliException>(() => Plan(args));
        Assert.Equal(expected, ex.Message);
    }
}
