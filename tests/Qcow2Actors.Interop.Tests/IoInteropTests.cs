using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a io</c> as a user runs it, with qemu-io as the oracle in both directions: what q2a
/// writes, qemu-io reads back with <c>read -P</c>; what qemu-io writes, q2a verifies (and a
/// wrong pattern fails exactly as in qemu-io); qemu-img check stays clean.
/// </summary>
public sealed class IoInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static QemuTools.Result Q2aIo(string image, params string[] commands) =>
        QemuTools.Q2a(["io", .. commands.SelectMany(c => new[] { "-c", c }), image]);

    private static QemuTools.Result QemuIo(string image, params string[] commands) =>
        QemuTools.QemuIo(["-r", .. commands.SelectMany(c => new[] { "-c", c }), image]);

    private string NewImage(string options = "", string size = "8M")
    {
        string img = _dir.File($"img{Guid.NewGuid():N}.qcow2");
        var args = options.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        QemuTools.QemuImg(["create", "-q", "-f", "qcow2", .. args, img, size]).EnsureSuccess();
        return img;
    }

    private static void AssertClean(string img)
    {
        var check = QemuTools.QemuImg("check", img);
        Assert.True(check.ExitCode == 0, check.StdOut + check.StdErr);
        Assert.Contains("No errors were found on the image.", check.StdOut, StringComparison.Ordinal);
    }

    // Patterns, zeroes and discards over cluster, subcluster and L2-table boundaries, with the
    // qemu-io reads that must then hold.
    private static readonly string[] Writes =
    [
        "write -P 0xab 0 64k",
        "write -P 0x11 100k 10k",
        "write -P 0x22 1020k 8k",
        "write -P 0x33 2M 256k",
        "write -z 2M 64k",
        "write -z -u 2112k 64k",
        "discard 4M 64k",
        "write -P 0x44 4M 64k",
        "discard 4M 64k",
        "write -P 0x55 5000k 3",
        "flush",
    ];

    private static readonly string[] Reads =
    [
        "read -P 0xab 0 64k",
        "read -P 0 64k 36k",
        "read -P 0x11 100k 10k",
        "read -P 0x22 1020k 8k",
        "read -P 0 2M 128k",
        "read -P 0x33 2176k 128k",
        "read -P 0 4M 64k",
        "read -P 0x55 5000k 3",
        "read -P 0 7M 1M",
    ];

    [QemuTheory]
    [InlineData("")]
    [InlineData("-o cluster_size=4k")]
    [InlineData("-o cluster_size=512,refcount_bits=1")]
    [InlineData("-o extended_l2=on")]
    [InlineData("-o compat=0.10")]
    [InlineData("-o lazy_refcounts=on,refcount_bits=64")]
    [InlineData("-o preallocation=metadata")]
    public void What_q2a_writes_qemu_io_reads_back(string options)
    {
        string img = NewImage(options);
        var r = Q2aIo(img, Writes).EnsureSuccess();
        Assert.StartsWith("wrote 65536/65536 bytes at offset 0\n64 KiB, 1 ops; ", r.StdOut.ReplaceLineEndings("\n"), StringComparison.Ordinal);
        var check = QemuIo(img, Reads);
        Assert.True(check.ExitCode == 0, check.StdOut + check.StdErr);
        Assert.DoesNotContain("Pattern verification failed", check.StdOut, StringComparison.Ordinal);
        AssertClean(img);
    }

    [QemuFact]
    public void What_q2a_writes_over_a_backing_file_reads_through_the_chain_in_qemu_io()
    {
        string bas = _dir.File("base.qcow2"), top = _dir.File("top.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", bas, "4M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 1 0 1M", bas).EnsureSuccess();
        QemuTools.Q2a("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top).EnsureSuccess();
        Q2aIo(top, "write -P 2 64k 4k", "write -z 128k 64k", "flush").EnsureSuccess();
        var r = QemuIo(top, "read -P 1 0 64k", "read -P 1 68k 60k", "read -P 2 64k 4k", "read -P 0 128k 64k", "read -P 1 192k 832k", "read -P 0 1M 3M");
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        AssertClean(top);
    }

    [QemuFact]
    public void Raw_images_are_written_in_place_and_probed_without_f()
    {
        string img = _dir.File("disk.raw");
        QemuTools.Q2a("create", "-q", "-f", "raw", img, "1M").EnsureSuccess();
        Q2aIo(img, "write -P 1 0 4k", "write -z 1k 1k", "discard 3k 1k", "write -f -P 2 1020k 4k", "flush").EnsureSuccess();
        var r = QemuTools.QemuIo("-f", "raw", "-r", "-c", "read -P 1 0 1k", "-c", "read -P 0 1k 1k", "-c", "read -P 1 2k 1k",
            "-c", "read -P 0 3k 1k", "-c", "read -P 2 1020k 4k", img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Equal(1L << 20, new FileInfo(img).Length);
        var past = QemuTools.Q2a("io", "-f", "raw", "-c", "write 1M 1", img);
        Assert.Equal((1, "write failed: Input/output error"), (past.ExitCode, past.StdOut.Trim()));
    }

    [QemuFact]
    public void Compressed_writes_are_readable_and_counted_by_qemu()
    {
        string img = NewImage();
        Q2aIo(img, "write -c -P 7 0 128k").EnsureSuccess();
        var r = QemuIo(img, "read -P 7 0 128k");
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        var check = QemuTools.QemuImg("check", img).EnsureSuccess();
        Assert.Contains("compressed clusters", check.StdOut, StringComparison.Ordinal);
    }

    [QemuFact]
    public void What_qemu_io_writes_q2a_verifies_and_a_wrong_pattern_fails_like_qemu_io()
    {
        string img = NewImage("-o extended_l2=on");
        QemuTools.QemuIo("-c", "write -P 0x5a 0 64k", "-c", "write -P 0x6b 1M 4k", "-c", "write -z 2M 64k", img).EnsureSuccess();

        var good = QemuTools.Q2a("io", "-r", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0x6b 1M 4k", "-c", "read -P 0 2M 64k", img);
        Assert.True(good.ExitCode == 0, good.StdOut + good.StdErr);
        Assert.DoesNotContain("failed", good.StdOut, StringComparison.Ordinal);

        var bad = QemuTools.Q2a("io", "-r", "-c", "read -P 0x5b 0 64k", "-c", "read -P 0x6b 1M 4k", img);
        var theirs = QemuTools.QemuIo("-r", "-c", "read -P 0x5b 0 64k", "-c", "read -P 0x6b 1M 4k", img);
        Assert.Equal(theirs.ExitCode, bad.ExitCode);
        Assert.Equal(1, bad.ExitCode);
        Assert.Equal(FirstLines(theirs.StdOut), FirstLines(bad.StdOut));
        Assert.StartsWith("Pattern verification failed at offset 0, 65536 bytes\n", bad.StdOut, StringComparison.Ordinal);
    }

    [QemuFact]
    public void Reads_without_r_open_read_write_and_leave_the_image_clean()
    {
        string img = NewImage();
        QemuTools.QemuIo("-c", "write -P 3 0 4k", img).EnsureSuccess();
        Q2aIo(img, "read -P 3 0 4k").EnsureSuccess();
        AssertClean(img);
        QemuIo(img, "read -P 3 0 4k").EnsureSuccess();
    }

    [QemuFact]
    public void Report_lines_match_qemu_io_apart_from_the_timing_numbers()
    {
        string a = NewImage(), b = NewImage();
        string[] cmds = ["write -P 1 0 64k", "write -z 64k 64k", "discard 128k 64k", "read -v 0 32", "read 10M 1", "write 1 1", "length", "read -P 300 0 1", "read 0 1x", "flush"];
        var ours = Q2aIo(a, cmds);
        var theirs = QemuTools.QemuIo([.. cmds.SelectMany(c => new[] { "-c", c }), b]);
        Assert.Equal(theirs.ExitCode, ours.ExitCode);
        Assert.Equal(FirstLines(theirs.StdOut), FirstLines(ours.StdOut));
        Assert.Equal(theirs.StdErr, ours.StdErr);
    }

    [QemuFact]
    public void Read_only_open_refuses_writes_and_leaves_the_file_alone()
    {
        string img = NewImage();
        byte[] before = File.ReadAllBytes(img);
        var r = QemuTools.Q2a("io", "-r", "-c", "write 0 1", "-c", "read 0 1", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("q2a: Block node is read-only", r.StdErr.Trim());
        Assert.StartsWith("read 1/1 bytes at offset 0\n", r.StdOut, StringComparison.Ordinal);
        Assert.Equal(before, File.ReadAllBytes(img));
    }

    [QemuFact]
    public void A_missing_image_is_one_line_and_exit_1()
    {
        string img = _dir.File("nope.qcow2");
        var r = QemuTools.Q2a("io", "-c", "read 0 1", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"q2a: can't open device {img}: Could not open '{img}': No such file or directory", r.StdErr.Trim());
    }

    [QemuFact]
    public void Abort_kills_the_process_and_a_flushed_write_survives_the_crash()
    {
        string img = NewImage();
        var crashed = Q2aIo(img, "write -P 9 0 64k", "flush", "write -P 10 1M 64k", "abort", "write -P 11 2M 64k");
        Assert.NotEqual(0, crashed.ExitCode);
        Assert.Contains("wrote 65536/65536 bytes at offset 1048576", crashed.StdOut, StringComparison.Ordinal);
        Assert.DoesNotContain("offset 2097152", crashed.StdOut, StringComparison.Ordinal);

        // The next read-write open recovers; the flushed write is there, the image closes clean.
        var r = Q2aIo(img, "read -P 9 0 64k");
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        AssertClean(img);
        QemuIo(img, "read -P 9 0 64k", "read -P 0 2M 64k").EnsureSuccess();
    }

    // The first line of each report pair and every message line: the timing lines are ours.
    private static string FirstLines(string stdout) => string.Join('\n', stdout.ReplaceLineEndings("\n").Split('\n')
        .Where(l => !l.Contains(" ops; ", StringComparison.Ordinal) && !l.Contains(" ops/sec", StringComparison.Ordinal)));
}
