namespace Qcow2Actors.Cli.Tests;

/// <summary>
/// Unknown options are one-line errors for every verb, found before any verb runs; option values,
/// negative sizes, "-" and everything after "--" are not options.
/// </summary>
public sealed class ParseErrorsTests
{
    private static string? Problem(params string[] args) => ParseErrors.Describe(Verbs.Root().Parse(args), args);

    [Theory]
    [InlineData("q2a serve: unrecognized option '--read-onyl'", "serve", "--read-onyl", "x.qcow2")]
    [InlineData("q2a info: unrecognized option '--bogus=3'", "info", "x.qcow2", "--bogus=3")]
    [InlineData("q2a create: unrecognized option '--bogus'", "create", "-f", "qcow2", "x", "1M", "--bogus")]
    [InlineData("q2a io: unrecognized option '-X'", "io", "-rX", "-c", "read 0 1", "x")]
    [InlineData("q2a io: unrecognized option '-q'", "io", "-c", "read 0 1", "-rq", "x")]
    [InlineData("q2a convert: unrecognized option '-Z'", "convert", "-Z", "a", "b")]
    [InlineData("q2a: unrecognized option '--frob'", "--frob")]
    public void An_unknown_option_is_named_in_one_line(string expected, params string[] args) =>
        Assert.Equal(expected, Problem(args));

    [Theory]
    [InlineData("info", "--", "-x.qcow2")]
    [InlineData("serve", "--", "--read-onyl")]
    [InlineData("resize", "x.qcow2", "-1G")]
    [InlineData("io", "-c", "-x", "x")]
    [InlineData("io", "-rc", "read 0 1", "x")]
    [InlineData("info", "-fqcow2", "x")]
    [InlineData("convert", "-cp", "-O", "qcow2", "a", "b")]
    [InlineData("convert", "-O", "raw", "-", "b")]
    [InlineData("serve", "--discard=ignore", "--port", "0", "x")]
    [InlineData("serve", "--cache=none", "--port", "0", "x")]
    [InlineData("snapshot", "-l", "--force-share", "x")]
    public void Values_negative_numbers_and_operands_after_double_dash_are_not_options(params string[] args) =>
        Assert.Null(Problem(args));

    [Fact]
    public void Other_usage_errors_are_one_line_too()
    {
        Assert.Equal("q2a info: Required argument 'filename' missing for command: 'info'.", Problem("info"));
        Assert.Equal("q2a: unrecognized command 'frob' (q2a --help lists them)", Problem("frob"));
        Assert.Null(Problem()); // no verb at all: the help
    }
}
