using System.Globalization;
using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// Persistent dirty bitmaps between q2a and QEMU, judged by QEMU: a bitmap q2a's writes kept is
/// consistent after a clean close (no in-use flag, <c>qemu-img bitmap --merge</c> and
/// <c>convert --bitmaps</c> take it) and its set granules, read through <c>qemu-nbd -B</c> and
/// <c>nbdinfo --map</c>, are exactly those the writes touched; a bitmap <c>q2a bitmap</c> made is
/// kept by QEMU's writes the same way; after a q2a crash and recovery the bitmap is consistent and
/// covers every write that reached the image, while one QEMU's crash left in use stays in use.
/// </summary>
public sealed class BitmapInteropTests : IDisposable
{
    private const long Size = 16 << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static QemuTools.Result Q2aIo(string image, params string[] commands) =>
        QemuTools.Q2a(["io", .. commands.SelectMany(c => new[] { "-c", c }), image]);

    /// <summary>The dirty runs of <paramref name="bitmap"/> as qemu-nbd serves them (start, length).</summary>
    private List<(long Start, long Length)> DirtyRuns(string image, string bitmap)
    {
        using var nbd = QemuNbdProcess.Start(image, _dir, "-r", "-B", bitmap);
        var map = QemuTools.Run("nbdinfo", $"--map=qemu:dirty-bitmap:{bitmap}", nbd.Uri).EnsureSuccess().StdOut;
        nbd.Stop();
        var runs = new List<(long, long)>();
        foreach (var line in map.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f[2] == "1") runs.Add((long.Parse(f[0], CultureInfo.InvariantCulture), long.Parse(f[1], CultureInfo.InvariantCulture)));
        }
        return runs;
    }

    private static JsonArray? BitmapsOf(string image) =>
        JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", image).EnsureSuccess().StdOut)!["format-specific"]!["data"]!["bitmaps"]?.AsArray();

    private static List<string> Flags(JsonNode bitmap) => [.. bitmap["flags"]!.AsArray().Select(f => (string)f!)];

    [QemuFact]
    public void A_bitmap_kept_by_q2a_writes_is_consistent_exact_and_taken_by_qemu_merge_and_convert()
    {
        var img = _dir.File("kept.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, Size.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", "-g", "64k", img, "b0").EnsureSuccess();
        Q2aIo(img, "write -P 1 0 4k", "write -P 2 1M 70k", "flush", "write -z 8M 64k", "discard 12M 128k").EnsureSuccess();

        var bitmap = Assert.Single(BitmapsOf(img)!)!;
        Assert.Equal(["auto"], Flags(bitmap));
        QemuTools.AssertCheckClean(img);
        List<(long, long)> touched = [(0, 65536), (1 << 20, 131072), (8 << 20, 65536), (12 << 20, 131072)];
        Assert.Equal(touched, DirtyRuns(img, "b0"));

        QemuTools.QemuImg("bitmap", "--add", img, "copy").EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--merge", "b0", img, "copy").EnsureSuccess();
        Assert.Equal(touched, DirtyRuns(img, "copy"));
        var converted = _dir.File("converted.qcow2");
        QemuTools.QemuImg("convert", "--bitmaps", "-O", "qcow2", img, converted).EnsureSuccess();
        Assert.Equal(touched, DirtyRuns(converted, "b0"));
        // q2a's own convert --bitmaps copies them the same.
        var ours = _dir.File("ours.qcow2");
        QemuTools.Q2a("convert", "--bitmaps", "-O", "qcow2", img, ours).EnsureSuccess();
        Assert.Equal(touched, DirtyRuns(ours, "b0"));
        QemuTools.AssertCheckClean(ours);
    }

    [QemuFact]
    public void A_bitmap_q2a_adds_is_kept_by_qemu_writes_and_q2a_clears_disables_and_removes_it()
    {
        var img = _dir.File("added.qcow2");
        QemuTools.Q2a("create", "-q", "-f", "qcow2", img, Size.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
        QemuTools.Q2a("bitmap", "--add", "-g", "4k", img, "b1").EnsureSuccess();
        Assert.Equal(["auto"], Flags(Assert.Single(BitmapsOf(img)!)!));
        QemuTools.QemuIo("-c", "write 8k 100", "-c", "write 1M 8k", img).EnsureSuccess();
        Assert.Equal([(8192, 4096), (1 << 20, 8192)], DirtyRuns(img, "b1"));

        QemuTools.Q2a("bitmap", "--clear", "--disable", img, "b1").EnsureSuccess();
        Assert.Empty(Flags(Assert.Single(BitmapsOf(img)!)!));
        QemuTools.QemuIo("-c", "write 2M 4k", img).EnsureSuccess();
        Assert.Empty(DirtyRuns(img, "b1"));
        QemuTools.AssertCheckClean(img);

        var exists = QemuTools.Q2a("bitmap", "--add", img, "b1");
        Assert.Equal(1, exists.ExitCode);
        Assert.Equal("q2a: Operation add on bitmap b1 failed: Bitmap already exists: b1", exists.StdErr.Trim());
        QemuTools.Q2a("bitmap", "--remove", img, "b1").EnsureSuccess();
        Assert.Null(BitmapsOf(img));
        QemuTools.AssertCheckClean(img);
    }

    [QemuFact]
    public void After_a_crash_and_recovery_the_bitmap_q2a_kept_is_consistent_and_covers_every_write_that_reached_the_image()
    {
        var img = _dir.File("crash.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, Size.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", img, "b0").EnsureSuccess();
        var crashed = Q2aIo(img, "write -P 1 0 64k", "flush", "write -P 2 1M 64k", "write -z 4M 4k", "write -P 3 9M 100", "abort");
        Assert.NotEqual(0, crashed.ExitCode);
        QemuTools.Q2a("recover", img).EnsureSuccess();

        Assert.Equal(["auto"], Flags(Assert.Single(BitmapsOf(img)!)!));
        QemuTools.AssertCheckClean(img);
        QemuTools.QemuImg("bitmap", "--add", img, "copy").EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--merge", "b0", img, "copy").EnsureSuccess();
        // Every granule whose content differs from the empty disk before is dirty.
        var raw = _dir.File("crash.raw");
        QemuTools.QemuImg("convert", "-O", "raw", img, raw).EnsureSuccess();
        var content = File.ReadAllBytes(raw);
        var dirty = DirtyRuns(img, "b0");
        const int granule = 65536;
        for (int g = 0; g < content.Length / granule; g++)
        {
            if (Array.TrueForAll(content[(g * granule)..((g + 1) * granule)], b => b == 0)) continue;
            Assert.Contains(dirty, r => r.Start <= (long)g * granule && (long)(g + 1) * granule <= r.Start + r.Length);
        }
        Assert.Contains((0L, 65536L), dirty);
    }

    [QemuFact]
    public void A_bitmap_qemu_left_in_use_stays_inconsistent_through_q2a_recovery_and_convert_refuses_it_unless_told_to_skip()
    {
        var img = _dir.File("qemu-crash.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, Size.ToString(CultureInfo.InvariantCulture)).EnsureSuccess();
        QemuTools.QemuImg("bitmap", "--add", img, "b0").EnsureSuccess();
        // QEMU marks the bitmap in use when it opens the image for writing; its crash leaves it so.
        Assert.NotEqual(0, QemuTools.QemuIo("-c", "write -P 1 0 64k", "-c", "abort", img).ExitCode);
        QemuTools.Q2a("recover", img).EnsureSuccess();

        Assert.Equal(["in-use", "auto"], Flags(Assert.Single(BitmapsOf(img)!)!));
        Assert.Equal(BitmapsOf(img)!.ToJsonString(), JsonNode.Parse(QemuTools.Q2a("info", "--output=json", img).EnsureSuccess().StdOut)!["format-specific"]!["data"]!["bitmaps"]!.ToJsonString());
        var refused = QemuTools.Q2a("convert", "--bitmaps", "-O", "qcow2", img, _dir.File("out.qcow2"));
        Assert.Equal(1, refused.ExitCode);
        Assert.StartsWith("q2a: Cannot copy inconsistent bitmap 'b0'", refused.StdErr, StringComparison.Ordinal);
        Assert.False(File.Exists(_dir.File("out.qcow2")));
        QemuTools.Q2a("convert", "--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2", img, _dir.File("out.qcow2")).EnsureSuccess();
        Assert.Null(BitmapsOf(_dir.File("out.qcow2")));
        // What QEMU allows with an inconsistent bitmap: removing it.
        QemuTools.Q2a("bitmap", "--remove", img, "b0").EnsureSuccess();
        QemuTools.AssertCheckClean(img);
    }
}
