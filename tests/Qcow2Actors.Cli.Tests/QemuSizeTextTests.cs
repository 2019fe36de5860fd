using System.Globalization;
using CsCheck;
using Qcow2Actors.Cli;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests;

public sealed class QemuSizeTextTests
{
    // size_to_str through .NET's "G3" of the same double, which rounds the exact binary value half to even as glibc's
    // %0.3g does and switches to an exponent where %g does (in capitals: "1E+03" for C's "1e+03").
    private static string DoubleFormula(long value)
    {
        string[] suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        var scaled = value / (1000.0 / 1024.0);
        var exponent = scaled == 0 ? 0 : (int)Math.Floor(Math.Log2(scaled)) + 1;
        var i = Math.Max(0, (exponent - 1) / 10);
        var shown = value / (double)(1L << (i * 10));
        var s = shown.ToString("G3", CultureInfo.InvariantCulture).Replace('E', 'e');
        return $"{s} {suffixes[i]}B";
    }

    [Theory]
    [InlineData(0L, "0 B")]
    [InlineData(999L, "999 B")]
    [InlineData(1000L, "0.977 KiB")]
    [InlineData(1536L, "1.5 KiB")]
    [InlineData(102912L, "100 KiB")] // 100.5 exactly: half to even
    [InlineData(103936L, "102 KiB")] // 101.5 exactly: half to even, upwards
    [InlineData(1073741824L, "1 GiB")]
    [InlineData(1023487L, "999 KiB")] // 999.4990...
    [InlineData(1023488L, "1e+03 KiB")] // 999.5: three digits round to 1000, which %g writes with an exponent
    [InlineData(long.MaxValue, "8 EiB")]
    public void Sizes_read_as_qemu_img_prints_them(long value, string expected) =>
        Assert.Equal(expected, QemuSizeText.Format(value));

    [Fact]
    public void Every_size_reads_as_dotnet_G3_of_the_same_double_reads()
    {
        // Spread over every magnitude: a random power-of-two scale, a random mantissa, and values next to halves.
        var sizes = Gen.Select(Gen.Int[0, 62], Gen.Long[0, long.MaxValue], Gen.Int[-2, 2])
            .Select((bits, r, nudge) => Math.Clamp((r >> (62 - bits)) + nudge, 0, long.MaxValue));
        sizes.Sample(v => Assert.Equal(DoubleFormula(v), QemuSizeText.Format(v)), iter: 200_000);
        // Exact halves of the third digit at every unit: where rounding half to even decides.
        for (int unit = 10; unit <= 60; unit += 10)
            for (long third = 1; third < 10_000; third += 7)
            {
                long v = (long)Math.Round(third / 10.0 * (1L << unit));
                Assert.Equal(DoubleFormula(v), QemuSizeText.Format(v));
            }
    }

    [QemuFact]
    public void Rounding_edges_read_as_qemu_img_info_prints_them()
    {
        using var dir = new TempDir();
        // Virtual sizes (multiples of 512) whose KiB or MiB quotient sits on or beside a rounding half.
        foreach (long size in new long[] { 1024, 1536, 102912, 103936, 1023488, 1048064, 1048576 + 512, 10_485_248 })
        {
            var path = dir.File($"s{size}.qcow2");
            QemuTools.QemuImg("create", "-q", "-f", "qcow2", path, size.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
            var line = QemuTools.QemuImg("info", path).EnsureSuccess().StdOut.Split('\n').Single(l => l.StartsWith("virtual size: ", StringComparison.Ordinal));
            Assert.Equal(line, $"virtual size: {QemuSizeText.Format(size)} ({size} bytes)");
        }
    }
}
