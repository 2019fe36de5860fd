using Qcow2Actors.Cli.Commands;

namespace Qcow2Actors.Cli.Tests;

/// <summary>
/// qemu-io's command syntax and output, run against memory. Expected lines are qemu-io 7.2's
/// for the same commands; the timing line uses a clock where every request takes 1 ms.
/// </summary>
public sealed class IoInterpreterTests
{
    private readonly StringWriter _out = new() { NewLine = "\n" };
    private readonly StringWriter _err = new() { NewLine = "\n" };
    private int _aborts;

    private async Task<(int Exit, string Out, string Err)> Run(MemoryIoTarget target, params string[] commands)
    {
        var interpreter = new IoInterpreter(target, _out, _err, () => { _aborts++; return ValueTask.CompletedTask; }, new OneMillisecondClock());
        int exit = await interpreter.RunAsync(commands, CancellationToken.None);
        return (exit, _out.ToString(), _err.ToString());
    }

    [Fact]
    public async Task Write_with_a_pattern_fills_the_range_and_prints_both_report_lines()
    {
        var t = new MemoryIoTarget(1 << 20);
        var r = await Run(t, "write -P 0xab 0 64k");
        Assert.Equal(0, r.Exit);
        Assert.Equal("wrote 65536/65536 bytes at offset 0\n64 KiB, 1 ops; 00.00 sec (62.500 MiB/sec and 1000.0000 ops/sec)\n", r.Out);
        Assert.All(t.Data[..65536], b => Assert.Equal(0xab, b));
        Assert.Equal(0, t.Data[65536]);
    }

    [Fact]
    public async Task Write_without_a_pattern_uses_qemu_ios_0xcd()
    {
        var t = new MemoryIoTarget(4096);
        await Run(t, "write 512 512");
        Assert.All(t.Data[512..1024], b => Assert.Equal(0xcd, b));
        Assert.Equal(0, t.Data[511]);
    }

    [Fact]
    public async Task Read_with_the_right_pattern_succeeds_and_a_wrong_one_fails_at_the_range_start()
    {
        var t = new MemoryIoTarget(1 << 20);
        t.Data.AsSpan(4096, 4096).Fill(0x42);
        var r = await Run(t, "read -P 0x42 4k 4k", "read -P 0x43 4k 4k");
        Assert.Equal(1, r.Exit);
        Assert.Equal(
            "read 4096/4096 bytes at offset 4096\n4 KiB, 1 ops; 00.00 sec (3.906 MiB/sec and 1000.0000 ops/sec)\n" +
            "Pattern verification failed at offset 4096, 4096 bytes\n" +
            "read 4096/4096 bytes at offset 4096\n4 KiB, 1 ops; 00.00 sec (3.906 MiB/sec and 1000.0000 ops/sec)\n", r.Out);
    }

    [Fact]
    public async Task Pattern_verification_covers_only_the_s_and_l_window()
    {
        var t = new MemoryIoTarget(4096);
        t.Data.AsSpan(4, 4).Fill(0x41);
        var r = await Run(t, "read -q -P 0x41 -s 4 -l 4 0 16");
        Assert.Equal((0, "", ""), r);
        r = await Run(t, "read -q -P 0x41 -s 4 -l 5 0 16");
        Assert.Equal("Pattern verification failed at offset 4, 5 bytes\n", r.Out);
    }

    [Fact]
    public async Task Read_v_dumps_like_qemu_io()
    {
        var t = new MemoryIoTarget(4096);
        t.Data.AsSpan(0, 16).Fill(0x41);
        var r = await Run(t, "read -v 0 17");
        Assert.StartsWith(
            "00000000:  41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41  AAAAAAAAAAAAAAAA\n" +
            "00000010:  00  .\n" +
            "read 17/17 bytes at offset 0\n17 bytes, 1 ops;", r.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Write_z_u_zeroes_with_unmap_and_f_is_fua()
    {
        var t = new MemoryIoTarget(1 << 20);
        t.Data.AsSpan().Fill(1);
        var r = await Run(t, "write -z -u 64k 64k", "write -z 0 512", "write -f -P 2 4k 512", "discard 128k 64k", "flush");
        Assert.Equal(0, r.Exit);
        Assert.Equal(["zero 65536 65536 unmap", "zero 0 512", "write 4096 512 fua", "discard 131072 65536", "flush"], t.Calls);
        Assert.Contains("discard 65536/65536 bytes at offset 131072\n", r.Out, StringComparison.Ordinal);
        Assert.Equal(0, t.Data[65536]);
    }

    [Fact]
    public async Task Aliases_and_clustered_options_and_options_after_operands_work_like_getopt()
    {
        var t = new MemoryIoTarget(4096);
        var r = await Run(t, "w -P0x11 0 512", "r 0 512 -qP 0x11", "d 0 1", "f", "read -P 0 -- 0 1");
        Assert.Equal(0, r.Exit);
        Assert.Equal(["write 0 512", "read 0 512", "discard 0 1", "flush", "read 0 1"], t.Calls);
    }

    [Fact]
    public async Task Failures_print_qemu_ios_lines_and_later_commands_still_run()
    {
        var t = new MemoryIoTarget(1 << 20);
        var r = await Run(t, "bogus", "read 0", "read -x 0 1", "read 0 1x", "read -P 300 0 1", "read 2M 1", "write 1M 512",
            "discard 2M 1", "flush 1", "read 0 3G", "read -s 4 0 16", "read -P 1", "write -u 0 1", "write -P 1 -z 0 1", "write -n 0 1",
            "read 0 -1", "read -P 1 -s 4 -l 40 0 16", "read 99999999999999999999 1", "write -c 0 1", "read 0 512");
        Assert.Equal(1, r.Exit);
        // qemu-io 7.2's stdout for the same commands, with our timing numbers in the last line.
        const string readUsage = "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset\n";
        Assert.Equal(
            readUsage +
            "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1x\n" +
            "300 is not a valid pattern byte\n" +
            "read failed: Input/output error\n" +
            "write failed: Input/output error\n" +
            "discard failed: Input/output error\n" +
            "length cannot exceed 2147483136, given 3G\n" +
            readUsage +
            readUsage +
            "-u requires -z to be specified\n" +
            "Only one of -z, -P, and -s can be specified at the same time\n" +
            "-n requires -z to be specified\n" +
            readUsage +
            "pattern verification range exceeds end of read data\n" +
            "Parsing error: argument too large -- 99999999999999999999\n" +
            "1 is not a sector-aligned value for 'count'\n" +
            "read 512/512 bytes at offset 0\n512 bytes, 1 ops; 00.00 sec (500 KiB/sec and 1000.0000 ops/sec)\n",
            r.Out);
        Assert.Equal(
            "command \"bogus\" not found\n" +
            "bad argument count 1 to read, expected at least 2 arguments\n" +
            "read: invalid option -- 'x'\n" +
            "bad argument count 1 to flush, expected 0 arguments\n" +
            "read: invalid option -- '1'\n", r.Err);
    }

    [Fact]
    public async Task Write_z_beyond_the_request_limit_needs_n()
    {
        var t = new MemoryIoTarget(4096);
        var r = await Run(t, "write -z 0 3G");
        Assert.Equal("length cannot exceed 2147483136 without -n, given 3G\n", r.Out);
    }

    [Fact]
    public async Task A_read_only_target_refuses_writes_before_parsing_them()
    {
        var t = new MemoryIoTarget(4096, readOnly: true);
        var r = await Run(t, "write 0 1", "write -z 0 1", "discard 0 1", "read 0 1");
        Assert.Equal(1, r.Exit);
        Assert.Equal(3, r.Err.Split('\n').Count(l => l == "q2a: Block node is read-only"));
        Assert.Equal(["read 0 1"], t.Calls);
    }

    [Fact]
    public async Task Abort_calls_the_crash_hook_and_nothing_after_it_runs()
    {
        var t = new MemoryIoTarget(4096);
        var r = await Run(t, "write 0 1", "abort", "write 1 1");
        Assert.Equal(1, _aborts);
        Assert.Equal(["write 0 1"], t.Calls);
        Assert.Equal(0, r.Exit);
    }

    [Fact]
    public async Task Quit_stops_the_command_list()
    {
        var t = new MemoryIoTarget(4096);
        await Run(t, "q", "read 0 1");
        Assert.Empty(t.Calls);
    }

    [Fact]
    public async Task Machine_format_is_one_comma_separated_line()
    {
        var r = await Run(new MemoryIoTarget(4096), "read -C 0 512");
        Assert.Equal("512,1,0:00:00.00,512000.000,1000.000\n", r.Out);
    }

    [Fact]
    public async Task Length_prints_the_size_in_binary_units()
    {
        var r = await Run(new MemoryIoTarget(4 << 20), "length");
        Assert.Equal("4 MiB\n", r.Out);
    }

    [Fact]
    public async Task Write_s_repeats_the_source_file_over_the_range()
    {
        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, "vm\n");
            var t = new MemoryIoTarget(4096);
            await Run(t, $"write -s {file} 0 20");
            Assert.Equal("vm\nvm\nvm\nvm\nvm\nvm\nvm"u8.ToArray()[..20], t.Data[..20]);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Engine_failures_map_to_qemu_strerror_texts()
    {
        var t = new MemoryIoTarget(4096) { FailNext = new IOException("No space left on device : '/x'") };
        var r = await Run(t, "write 0 1");
        Assert.Equal("write failed: No space left on device\n", r.Out);
        t.FailNext = new NotSupportedException("nope");
        r = await Run(t, "flush");
        Assert.Equal("q2a: flush failed: Operation not supported\n", r.Err);
        Assert.Equal(1, r.Exit);
    }

    [Theory]
    [InlineData("0xab", 0xab)]
    [InlineData("171", 171)]
    [InlineData("0377", 255)]
    [InlineData("0", 0)]
    [InlineData("-0", 0)]
    public void Pattern_bytes_parse_like_strtol_base_0(string text, int expected) =>
        Assert.Equal(expected, IoInterpreter.ParsePattern(text));

    [Theory]
    [InlineData("300")]
    [InlineData("-1")]
    [InlineData("0x1x")]
    [InlineData("0x")]
    [InlineData("08")]
    [InlineData("")]
    public void Pattern_bytes_outside_0_to_255_or_with_junk_are_refused(string text) =>
        Assert.Null(IoInterpreter.ParsePattern(text));

    [Theory]
    [InlineData(0, "0 bytes")]
    [InlineData(32, "32 bytes")]
    [InlineData(952.347393, "952.347393 bytes")]
    [InlineData(1024, "1 KiB")]
    [InlineData(65536, "64 KiB")]
    [InlineData(803177.0, "784.353 KiB")]
    [InlineData(1073741824.0 * 1.232, "1.232 GiB")]
    public void Byte_counts_print_like_cvtstr(double value, string expected) =>
        Assert.Equal(expected, IoReport.Bytes(value));

    [Fact]
    public void Durations_print_like_timestr()
    {
        Assert.Equal("00.00 sec", IoReport.Time(TimeSpan.FromMilliseconds(1), verbose: false));
        Assert.Equal("00.12 sec", IoReport.Time(TimeSpan.FromMilliseconds(123), verbose: false));
        Assert.Equal("0:00:01.50", IoReport.Time(TimeSpan.FromMilliseconds(1500), verbose: false));
        Assert.Equal("1:01:01.00", IoReport.Time(TimeSpan.FromSeconds(3661), verbose: false));
        Assert.Equal("0:00:00.00", IoReport.Time(TimeSpan.FromMilliseconds(1), verbose: true));
    }
}
