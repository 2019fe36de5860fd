using Qcow2Actors.Cli.Commands;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>
/// How amend and measure read their command lines: the options they take, and qemu-img 7.2's line
/// for each one they refuse (checked before any image is opened).
/// </summary>
public sealed class AmendMeasureParsingTests
{
    private static string? Problem(params string[] args) => ParseErrors.Describe(Verbs.Root().Parse(args), args);

    [Fact]
    public void Amend_maps_its_options_onto_the_amender()
    {
        var r = AmendCommand.Parse(["compat=v2,refcount_bits=16", "lazy_refcounts=off"], "qcow2")!;
        var o = r.Options;
        Assert.Equal((2, 16, false), (o.Version, o.RefcountBits, o.LazyRefcounts));
        Assert.Null(r.Size);
        r = AmendCommand.Parse(["compat=1.1,data_file=d.raw,data_file_raw=off", "size=32M"], null)!;
        o = r.Options;
        Assert.Equal((3, "d.raw", false), (o.Version, o.DataFile, o.DataFileRaw));
        Assert.Null(o.RefcountBits);
        Assert.Equal(32UL << 20, r.Size);
        Assert.Null(AmendCommand.Parse(["help"], null));
    }

    [Theory]
    [InlineData("Must specify options (-o)", null, null)]
    [InlineData("Unknown compatibility level 0.2", "compat=0.2", null)]
    [InlineData("Invalid parameter 'foo'", "foo=1", null)]
    [InlineData("Invalid parameter 'extended_l2': This option is only supported for image creation", "extended_l2=on", null)]
    [InlineData("Invalid parameter 'cluster_size': This option is only supported for image creation", "cluster_size=4k", null)]
    [InlineData("Format driver 'raw' does not support option amendment", "compat=1.1", "raw")]
    [InlineData("Unknown file format 'vmdkx'", "compat=1.1", "vmdkx")]
    [InlineData("Cannot amend the backing file: You can use 'qemu-img rebase' instead.", "backing_file=b.qcow2", null)]
    [InlineData("Cannot amend the backing file: You can use 'qemu-img rebase' instead.", "backing_fmt=qcow2", null)]
    [InlineData("Invalid parameter 'encryption': This option is only supported for image creation", "encryption=on", null)]
    public void Amend_refuses_with_qemu_img_words(string expected, string? option, string? format)
    {
        var ex = Assert.Throws<CliException>(() => AmendCommand.Parse(option is null ? [] : [option], format));
        Assert.Equal(expected, ex.Message);
    }

    [Theory]
    [InlineData("Either --size N or one filename must be specified.", null, null, null)]
    [InlineData("--size N cannot be used together with a filename.", "1G", "x.qcow2", null)]
    [InlineData("--output must be used with human or json as argument.", "1G", null, "xml")]
    [InlineData("Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.", "1x", null, null)]
    public async Task Measure_refuses_a_bad_command_line_before_opening_anything(string expected, string? size, string? file, string? output)
    {
        var ex = await Assert.ThrowsAsync<CliException>(() =>
            MeasureCommand.RunAsync(new MeasureRequest { Size = size, File = file, Output = output, OutFormat = "qcow2" }, TextWriter.Null, default));
        Assert.Equal(expected, ex.Message);
    }

    [Fact]
    public async Task Measure_of_a_new_size_prints_qemu_img_text_and_json()
    {
        var text = new StringWriter();
        await MeasureCommand.RunAsync(new MeasureRequest { Size = "1G", OutFormat = "qcow2" }, text, default);
        Assert.Equal("required size: 393216\nfully allocated size: 1074135040\n", text.ToString());
        var json = new StringWriter();
        await MeasureCommand.RunAsync(new MeasureRequest { Size = "1G", OutFormat = "qcow2", Output = "json" }, json, default);
        Assert.Equal("{\n    \"required\": 393216,\n    \"fully-allocated\": 1074135040\n}\n", json.ToString());
        var raw = new StringWriter();
        await MeasureCommand.RunAsync(new MeasureRequest { Size = "1000" }, raw, default);
        Assert.Equal("required size: 1024\nfully allocated size: 1024\n", raw.ToString());
    }

    [Theory]
    [InlineData("q2a amend: unrecognized option '--bogus'", "amend", "--bogus", "-o", "compat=1.1", "x")]
    [InlineData("q2a measure: unrecognized option '-Z'", "measure", "-Z", "--size", "1G")]
    [InlineData("q2a compare: unrecognized option '-X'", "compare", "-sX", "a", "b")]
    [InlineData("q2a resize: unrecognized option '--shrnk'", "resize", "--shrnk", "x", "1M")]
    public void An_unknown_option_of_the_new_verbs_is_named_in_one_line(string expected, params string[] args) =>
        Assert.Equal(expected, Problem(args));

    [Theory]
    [InlineData("amend", "-p", "-q", "-o", "compat=1.1", "-t", "none", "--force", "-f", "qcow2", "x")]
    [InlineData("measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=4k", "-f", "qcow2", "-l", "s1", "-U", "x")]
    [InlineData("measure", "--size", "1G")]
    [InlineData("compare", "-s", "-U", "-q", "a", "b")]
    [InlineData("resize", "--shrink", "x", "-1G")]
    [InlineData("create", "-f", "qcow2", "-o", "preallocation=full", "x", "1M")]
    public void The_new_options_parse(params string[] args) => Assert.Null(Problem(args));
}
