using Qcow2Actors.Cli;

namespace Qcow2Actors.Cli.Tests;

/// <summary>Sizes parse to the very numbers qemu-img 7.2 prints for the same text (checked against it by hand).</summary>
public sealed class QemuSizeTests
{
    [Theory]
    [InlineData("0", 0UL)]
    [InlineData("1000", 1000UL)]
    [InlineData("1b", 1UL)]
    [InlineData("1B", 1UL)]
    [InlineData("1k", 1024UL)]
    [InlineData("1K", 1024UL)]
    [InlineData("64k", 65536UL)]
    [InlineData("1M", 1048576UL)]
    [InlineData("1G", 1073741824UL)]
    [InlineData("1t", 1099511627776UL)]
    [InlineData("1P", 1125899906842624UL)]
    [InlineData("1e", 1152921504606846976UL)]
    [InlineData("1.5k", 1536UL)]
    [InlineData("1.5M", 1572864UL)]
    [InlineData("1.3k", 1331UL)]
    [InlineData("1.0000000001k", 1024UL)]
    [InlineData("1.k", 1024UL)]
    [InlineData("0x10", 16UL)]
    [InlineData("0x10k", 16384UL)]
    [InlineData("010", 10UL)]
    [InlineData("+5", 5UL)]
    [InlineData(" 1M", 1048576UL)]
    public void Parses_like_qemu_strtosz(string text, ulong expected)
    {
        Assert.Equal(QemuSizeError.None, QemuSize.TryParse(text, out var value));
        Assert.Equal(expected, value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("k")]
    [InlineData("1.5")]
    [InlineData("1.5b")]
    [InlineData("1kB")]
    [InlineData("1KiB")]
    [InlineData("1Q")]
    [InlineData("1 M")]
    [InlineData("1e3")]
    [InlineData("1.5e3k")]
    [InlineData("0x")]
    [InlineData("0x1.5k")]
    [InlineData("-1")]
    [InlineData("1x")]
    public void Refuses_what_qemu_refuses(string text)
    {
        Assert.Equal(QemuSizeError.Invalid, QemuSize.TryParse(text, out _));
    }

    [Theory]
    [InlineData("16E")]
    [InlineData("99999999999999999999")]
    [InlineData("0x10000000000000000")]
    public void Reports_overflow_past_64_bits_as_a_range_error(string text)
    {
        Assert.Equal(QemuSizeError.Range, QemuSize.TryParse(text, out _));
    }
}
