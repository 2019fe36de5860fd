using Qcow2Actors.Cli;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;

namespace Qcow2Actors.Cli.Tests;

/// <summary>
/// The -o parser and the Formatting line; expected lines are qemu-img 7.2's output for the
/// same arguments.
/// </summary>
public sealed class CreateOptionsTests
{
    private static CreateOptions Parse(params string[] o) => CreateOptions.Parse("qcow2", o, "x.qcow2");

    private static string Line(CreateOptions opts, long size)
    {
        opts.Set("size", size.ToString(System.Globalization.CultureInfo.InvariantCulture), (ulong)size);
        return $"fmt={opts.Format}{opts.Describe()}";
    }

    [Fact]
    public void Defaults_print_as_qemu_img_prints_them()
    {
        Assert.Equal("fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1073741824 lazy_refcounts=off refcount_bits=16",
            Line(Parse(), 1L << 30));
    }

    [Fact]
    public void Sizes_and_numbers_print_parsed_while_strings_and_booleans_print_as_typed()
    {
        var opts = Parse("cluster_size=4k,refcount_bits=0x8", "compat=v3,extended_l2=true,preallocation=metadata,compression_type=zstd,lazy_refcounts=on");
        Assert.Equal("fmt=qcow2 cluster_size=4096 extended_l2=true preallocation=metadata compression_type=zstd size=65536 compat=v3 lazy_refcounts=on refcount_bits=8",
            Line(opts, 65536));
    }

    [Fact]
    public void Several_o_merge_and_the_last_value_of_a_key_wins()
    {
        var opts = Parse("cluster_size=4k", "cluster_size=8k,lazy_refcounts=on");
        Assert.Equal(8192UL, opts.Number("cluster_size"));
        Assert.True(opts.Bool("lazy_refcounts"));
    }

    [Fact]
    public void A_bare_key_means_on_and_no_prefix_means_off_for_booleans()
    {
        Assert.True(Parse("lazy_refcounts").Bool("lazy_refcounts"));
        Assert.False(Parse("lazy_refcounts=on", "nolazy_refcounts").Bool("lazy_refcounts"));
    }

    [Fact]
    public void Doubled_commas_are_a_literal_comma_and_print_doubled()
    {
        var opts = Parse("backing_file=a b,,c,backing_fmt=raw");
        Assert.Equal("a b,c", opts.Text("backing_file"));
        Assert.Contains(" backing_file=a b,,c backing_fmt=raw ", Line(opts, 1048576), StringComparison.Ordinal);
    }

    [Fact]
    public void Backing_and_data_file_options_print_in_qemus_order()
    {
        var opts = Parse("data_file=e.raw,data_file_raw=on,backing_fmt=qcow2,backing_file=a.qcow2");
        Assert.Equal("fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=10485760 backing_file=a.qcow2 backing_fmt=qcow2 data_file=e.raw data_file_raw=on lazy_refcounts=off refcount_bits=16",
            Line(opts, 10485760));
    }

    [Fact]
    public void Raw_prints_only_its_size_and_preallocation()
    {
        var opts = CreateOptions.Parse("raw", ["preallocation=falloc"], "r.img");
        Assert.Equal("fmt=raw size=104857600 preallocation=falloc", Line(opts, 104857600));
    }

    [Theory]
    [InlineData("foo=bar", "x.qcow2: Invalid parameter 'foo'")]
    [InlineData("=4", "x.qcow2: Invalid parameter ''")]
    [InlineData("cluster_size=4k,", "Invalid option list: cluster_size=4k,")]
    [InlineData(",cluster_size=4k", "Invalid option list: ,cluster_size=4k")]
    [InlineData("", "Invalid option list: ")]
    [InlineData("lazy_refcounts=maybe", "x.qcow2: Parameter 'lazy_refcounts' expects 'on' or 'off'")]
    [InlineData("refcount_bits=abc", "x.qcow2: Parameter 'refcount_bits' expects a number")]
    [InlineData("cluster_size", "x.qcow2: Parameter 'cluster_size' expects a non-negative number below 2^64 Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta- and exabytes, respectively.")]
    [InlineData("encrypt.format=luks", "x.qcow2: encryption is not supported by q2a")]
    [InlineData("nofoo", "x.qcow2: Invalid parameter 'foo'")]
    [InlineData("nocow", "x.qcow2: Invalid parameter 'cow'")]
    public void Refuses_bad_options_with_qemu_imgs_message(string option, string message)
    {
        var ex = Assert.Throws<CliException>(() => Parse(option));
        Assert.Equal(message, ex.Message);
    }

    [Theory]
    [InlineData("foo=bar", "Invalid parameter 'foo'")]
    [InlineData("extended_l2=maybe", "Parameter 'extended_l2' expects 'on' or 'off'")]
    [InlineData("refcount_bits=abc", "Parameter 'refcount_bits' expects a number")]
    [InlineData("", "Invalid option list: ")]
    public void Without_an_image_name_errors_name_no_file_as_qemu_img_convert_does(string option, string message)
    {
        var ex = Assert.Throws<CliException>(() => CreateOptions.Parse("qcow2", [option], imagePath: null));
        Assert.Equal(message, ex.Message);
    }

    [Theory]
    [InlineData("qcow2", "fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=off refcount_bits=16 nocow=on extent_size_hint=1048576")]
    [InlineData("raw", "fmt=raw size=1048576 nocow=on extent_size_hint=1048576")]
    public void The_host_files_options_are_accepted_and_print_last_as_qemu_img_prints_them(string format, string line)
    {
        var opts = CreateOptions.Parse(format, ["extent_size_hint=1M,nocow=on"], "x");
        Assert.Equal(line, Line(opts, 1048576));
        Assert.False(CreateOptions.Parse(format, ["nonocow"], "x").Bool("nocow"));
    }

    [Fact]
    public void Unknown_formats_are_refused()
    {
        var ex = Assert.Throws<CliException>(() => CreateOptions.Parse("vmdk", [], "x"));
        Assert.Equal("Unknown file format 'vmdk'", ex.Message);
    }

    [Fact]
    public void Help_is_recognised_and_lists_options_in_qemus_layout()
    {
        var opts = Parse("help");
        Assert.True(opts.HelpRequested);
        var lines = opts.HelpText().Split('\n');
        Assert.Equal("Supported options:", lines[0]);
        Assert.Equal("  backing_file=<str>     - File name of a base image", lines[1]);
        Assert.Contains("  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image", lines);
    }

    [Fact]
    public void Options_map_onto_the_creator_options()
    {
        var opts = Parse("cluster_size=16k,refcount_bits=64,compat=1.1,extended_l2=on,lazy_refcounts=on,compression_type=zstd",
            "backing_file=b.qcow2,backing_fmt=qcow2,preallocation=metadata");
        var o = opts.ToQcow2Options(1 << 20, "x: ");
        Assert.Equal(new Qcow2CreateOptions
        {
            Size = 1 << 20, ClusterSize = 16384, RefcountBits = 64, Version = 3, ExtendedL2 = true, LazyRefcounts = true,
            CompressionType = CompressionType.Zstd, BackingFile = "b.qcow2", BackingFormat = "qcow2", Preallocation = Preallocation.Metadata,
        }, o);
        Assert.Equal(2, Parse("compat=0.10").ToQcow2Options(1, "x: ").Version);
        Assert.Equal(2, Parse("compat=v2").ToQcow2Options(1, "x: ").Version);
        Assert.True(Parse("data_file=d,data_file_raw=on").ToQcow2Options(1, "x: ").DataFileRaw);
    }

    [Theory]
    [InlineData("compat=2", "x: Parameter 'version' does not accept value '2'")]
    [InlineData("compression_type=lz4", "x: Parameter 'compression-type' does not accept value 'lz4'")]
    [InlineData("preallocation=bogus", "x: Parameter 'preallocation' does not accept value 'bogus'")]
    [InlineData("data_file_raw=on", "x: data-file-raw requires data-file")]
    public void Fixed_set_values_are_checked_when_mapping(string option, string message)
    {
        var ex = Assert.Throws<CliException>(() => Parse(option).ToQcow2Options(1, "x: "));
        Assert.Equal(message, ex.Message);
    }

    [Theory]
    [InlineData("1.5")]
    [InlineData("1Q")]
    public void A_bad_size_argument_names_the_suffixes(string size)
    {
        var ex = Assert.Throws<CliException>(() => CreateCommand.ParseImageSize(size));
        Assert.StartsWith("Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_size_of_2_to_the_63_or_more_is_out_of_range()
    {
        var ex = Assert.Throws<CliException>(() => CreateCommand.ParseImageSize("10E"));
        Assert.Equal("Invalid image size specified. Must be between 0 and 9223372036854775807.", ex.Message);
    }
}
