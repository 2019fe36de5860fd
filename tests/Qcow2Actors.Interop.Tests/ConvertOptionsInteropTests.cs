using System.Text.Json.Nodes;
using Qcow2Actors.Interop.Tests.Chain;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// q2a convert's qemu-img options (-n, -S, -W, -m, -t/-T, --target-is-zero, --salvage, -C, -r) run
/// beside qemu-img convert with the same inputs and arguments: the two results are the same image
/// (<c>qemu-img compare</c>), a qcow2 result is check-clean, and a refusal is the same exit code and
/// the same message (qemu-img's two-line messages are one line in q2a).
/// </summary>
public sealed class ConvertOptionsInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    // 12 MiB: data, a zero run inside data, explicit zero clusters, holes, a short last piece.
    private string Source()
    {
        string src = _dir.File("src.qcow2");
        Qemu("create", "-q", "-f", "qcow2", src, "12M");
        Io(src, ["write -P 1 0 1M", "write -P 0 256k 64k", "write -z 2M 1M", "write -P 2 5M 68k", "write -P 3 12284k 4k"]);
        return src;
    }

    [QemuTheory]
    [InlineData("raw", "-S", "0")]
    [InlineData("raw", "-S", "512")]
    [InlineData("qcow2", "-S", "0")]
    [InlineData("qcow2", "-S", "64k")]
    [InlineData("qcow2", "-m", "1")]
    [InlineData("qcow2", "-W", "-m", "16")]
    [InlineData("qcow2", "-t", "writethrough", "-T", "unsafe")]
    [InlineData("raw", "-C")]
    [InlineData("qcow2", "-C", "-B", "src.qcow2", "-F", "qcow2")]
    [InlineData("qcow2", "-c", "-m", "4", "-W")]
    [InlineData("qcow2", "-r", "1G", "-p")]
    public void Convert_with_an_option_gives_the_image_qemu_img_gives(string outFormat, params string[] options)
    {
        string src = Source();
        string ours = _dir.File($"ours.{outFormat}"), theirs = _dir.File($"theirs.{outFormat}");
        var args = options.Select(o => o == "src.qcow2" ? src : o).ToArray();
        Q2aOk(["convert", .. args, "-O", outFormat, src, ours]);
        Qemu(["convert", .. args, "-O", outFormat, src, theirs]);
        AssertSameImage(outFormat, ours, theirs);
        if (options.Contains("-S") && options[Array.IndexOf(options, "-S") + 1] == "0")
            // -S 0 allocates everything, as qemu-img does.
            Assert.Equal(Allocation(theirs), Allocation(ours));
    }

    [QemuTheory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public void Convert_n_writes_into_the_existing_target_zeros_included(string outFormat)
    {
        string src = Source();
        string ours = _dir.File($"ours.{outFormat}"), theirs = _dir.File($"theirs.{outFormat}");
        foreach (var t in new[] { ours, theirs })
        {
            Qemu("create", "-q", "-f", outFormat, t, "16M");
            Io(t, ["write -P 9 0 16M"], outFormat);
        }
        Q2aOk("convert", "-n", "-O", outFormat, src, ours);
        Qemu("convert", "-n", "-O", outFormat, src, theirs);
        AssertSameImage(outFormat, ours, theirs);
        // The source's zeros were written over the old pattern.
        Assert.Equal(0, QemuTools.QemuIo("-f", outFormat, "-c", "read -P 0 2M 1M", ours).ExitCode);
    }

    [QemuFact]
    public void Convert_n_with_target_is_zero_leaves_zeros_unwritten()
    {
        string src = Source();
        string ours = _dir.File("ours.qcow2"), theirs = _dir.File("theirs.qcow2");
        foreach (var t in new[] { ours, theirs }) Qemu("create", "-q", "-f", "qcow2", t, "12M");
        Q2aOk("convert", "-n", "--target-is-zero", "-O", "qcow2", src, ours);
        Qemu("convert", "-n", "--target-is-zero", "-O", "qcow2", src, theirs);
        AssertSameImage("qcow2", ours, theirs);
        // Nothing was written where the source reads zeros (the explicit zero clusters at 2M included).
        Assert.DoesNotContain(Map(ours), e => (long)e!["start"]! <= 2 << 20 && 2 << 20 < (long)e["start"]! + (long)e["length"]! && (bool)e["data"]!);
    }

    [QemuTheory]
    [InlineData("-n", "-O", "raw", "SRC", "small.raw")]
    [InlineData("-n", "-O", "qcow2", "SRC", "small.qcow2")]
    [InlineData("-n", "-O", "raw", "SRC", "missing.raw")]
    [InlineData("-n", "-O", "qcow2", "SRC", "small.raw")]
    [InlineData("-S", "1x", "SRC", "out.raw")]
    [InlineData("-S", "1000", "SRC", "out.raw")]
    [InlineData("-S", "32M", "SRC", "out.raw")]
    [InlineData("-m", "0", "SRC", "out.raw")]
    [InlineData("-m", "17", "SRC", "out.raw")]
    [InlineData("-t", "bogus", "SRC", "out.raw")]
    [InlineData("-T", "bogus", "SRC", "out.raw")]
    [InlineData("--target-is-zero", "SRC", "out.raw")]
    [InlineData("-C", "-c", "-O", "qcow2", "SRC", "out.qcow2")]
    [InlineData("-C", "-S", "4k", "SRC", "out.raw")]
    [InlineData("-C", "--salvage", "SRC", "out.raw")]
    [InlineData("-r", "x", "SRC", "out.raw")]
    [InlineData("-r", "-1", "SRC", "out.raw")]
    [InlineData("-n", "-o", "cluster_size=4k", "-O", "qcow2", "SRC", "small.qcow2")]
    public void Refusals_are_qemu_img_s(params string[] args)
    {
        string src = Source();
        Qemu("create", "-q", "-f", "raw", _dir.File("small.raw"), "1M");
        Qemu("create", "-q", "-f", "qcow2", _dir.File("small.qcow2"), "1M");
        var full = args.Select(a => a == "SRC" ? src : a.Contains('.', StringComparison.Ordinal) && !a.Contains('=', StringComparison.Ordinal) ? _dir.File(a) : a).ToArray();
        var theirs = QemuTools.QemuImg(["convert", .. full]);
        var ours = QemuTools.Q2a(["convert", .. full]);
        Assert.Equal(1, theirs.ExitCode);
        Assert.Equal(theirs.ExitCode, ours.ExitCode);
        string expected = string.Join(' ', theirs.StdErr.Trim().Split('\n').Select(l => l.StartsWith("qemu-img: ", StringComparison.Ordinal) ? l[10..] : l));
        Assert.Equal($"q2a: {expected}", ours.StdErr.Trim());
    }

    [QemuFact]
    public void Target_is_zero_with_a_backing_file_is_refused_with_qemu_img_s_message_and_exit_1()
    {
        // qemu-img 7.2 prints the message but exits 0 having written nothing; q2a says it failed.
        string src = Source();
        string target = _dir.File("t.qcow2");
        Qemu("create", "-q", "-f", "qcow2", target, "12M");
        string[] args = ["convert", "-n", "--target-is-zero", "-B", src, "-F", "qcow2", "-O", "qcow2", src, target];
        var theirs = QemuTools.QemuImg(args);
        var ours = QemuTools.Q2a(args);
        Assert.Equal("qemu-img: Cannot use --target-is-zero when the destination image has a backing file", theirs.StdErr.Trim());
        Assert.Equal("q2a: Cannot use --target-is-zero when the destination image has a backing file", ours.StdErr.Trim());
        Assert.Equal(1, ours.ExitCode);
    }

    [QemuFact]
    public void Salvage_turns_unreadable_ranges_into_zeros_with_a_warning_as_qemu_img_does()
    {
        // 4 KiB clusters: one L2 table covers 2 MiB; the first one's L1 entry is made unaligned.
        string src = _dir.File("bad.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", src, "8M");
        Io(src, ["write -P 1 0 1M", "write -P 2 5M 1M"]);
        using (var f = File.Open(src, FileMode.Open))
        {
            var header = new byte[48];
            f.ReadExactly(header);
            long l1 = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(40));
            var entry = new byte[8];
            f.Position = l1;
            f.ReadExactly(entry);
            ulong value = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(entry) + 0x200;
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(entry, value);
            f.Position = l1;
            f.Write(entry);
        }
        string ours = _dir.File("ours.raw"), theirs = _dir.File("theirs.raw");
        Assert.Equal(1, QemuTools.Q2a("convert", "-O", "raw", src, ours).ExitCode);
        var q = QemuTools.Q2a("convert", "--salvage", "-O", "raw", src, ours);
        Assert.Equal(0, q.ExitCode);
        Assert.Contains("q2a: warning: error while reading offset 0 (2097152 bytes, written as zeros): ", q.StdErr, StringComparison.Ordinal);
        Assert.Equal(0, QemuTools.QemuImg("convert", "--salvage", "-O", "raw", src, theirs).ExitCode);
        AssertSameImage("raw", ours, theirs);
        // What could be read survived.
        Assert.Equal(0, QemuTools.QemuIo("-f", "raw", "-c", "read -P 2 5M 1M", ours).ExitCode);
    }

    [QemuTheory]
    [InlineData("convert", "-O", "qcow2", "SRC", "TARGET")]
    [InlineData("dd", "-O", "qcow2", "if=SRC", "of=TARGET")]
    public void A_new_qcow2_target_is_locked_from_its_creation_to_the_engine_s_open(params string[] args)
    {
        string src = Source();
        string target = _dir.File("target.qcow2");
        Qemu("create", "-q", "-f", "qcow2", target, "1M"); // an existing target is replaced under the lock too
        var full = args.Select(a => a.Replace("SRC", src, StringComparison.Ordinal).Replace("TARGET", target, StringComparison.Ordinal)).ToArray();
        using var held = HeldQ2a.Start("at:created", full);
        // Between creation and the engine's open nobody else can open it, reader or writer.
        var reader = QemuTools.QemuIo("-r", "-c", "read 0 512", target);
        Assert.NotEqual(0, reader.ExitCode);
        Assert.Contains("Failed to get shared \"write\" lock", reader.StdErr, StringComparison.Ordinal);
        var writer = QemuTools.QemuIo("-c", "write 0 512", target);
        Assert.NotEqual(0, writer.ExitCode);
        Assert.Contains("lock", writer.StdErr, StringComparison.Ordinal);
    }

    private static void Q2aOk(params string[] args) => QemuTools.Q2a(args).EnsureSuccess();

    private static void AssertSameImage(string format, string ours, string theirs)
    {
        var compare = QemuTools.QemuImg("compare", "-f", format, "-F", format, ours, theirs);
        Assert.True(compare.ExitCode == 0, compare.StdOut + compare.StdErr);
        if (format == "qcow2") QemuTools.AssertCheckClean(ours);
    }

    private static JsonArray Map(string image) => JsonNode.Parse(QemuTools.QemuImg("map", "--output=json", image).EnsureSuccess().StdOut)!.AsArray();

    // (start, length, data) runs, merged: where the image stores data and where not.
    private static string Allocation(string image)
    {
        var runs = new List<(long Start, long End, bool Data)>();
        foreach (var e in Map(image))
        {
            long start = (long)e!["start"]!, end = start + (long)e["length"]!;
            bool data = (bool)e["data"]!;
            if (runs.Count > 0 && runs[^1].Data == data && runs[^1].End == start) runs[^1] = (runs[^1].Start, end, data);
            else runs.Add((start, end, data));
        }
        return string.Join(';', runs);
    }
}
