using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a recover [--rebuild]</c> as a user runs it, judged by QEMU: an image a crash left with
/// journal records pending is refused by qemu-img by the name of our feature bit, and after
/// recover it is plain qcow2 again — <c>qemu-img check</c> clean, the flushed data readable with
/// <c>qemu-io read -P</c>, no journal beside it.
/// </summary>
public sealed class RecoverInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private const string JournalPendingName = "journal pending: run q2a recover";

    private static QemuTools.Result Q2aIo(string image, params string[] commands) =>
        QemuTools.Q2a(["io", .. commands.SelectMany(c => new[] { "-c", c }), image]);

    /// <summary>A new 8 MiB image made by <paramref name="creator"/> ("q2a" or "qemu-img") with extra create args.</summary>
    private string NewImage(string creator, params string[] options)
    {
        string img = _dir.File($"img{Guid.NewGuid():N}.qcow2");
        string[] args = ["create", "-q", "-f", "qcow2", .. options.SelectMany(o => new[] { "-o", o }), img, "8M"];
        (creator == "q2a" ? QemuTools.Q2a(args) : QemuTools.QemuImg(args)).EnsureSuccess();
        return img;
    }

    /// <summary>One flushed write, one unflushed write, then a SIGKILL: the journal holds the flushed batch.</summary>
    private static void CrashWithJournalPending(string img)
    {
        var crashed = Q2aIo(img, "write -P 0x11 0 64k", "flush", "write -P 0x22 64k 64k", "abort");
        Assert.NotEqual(0, crashed.ExitCode);
        Assert.Contains("wrote 65536/65536 bytes at offset 65536", crashed.StdOut, StringComparison.Ordinal);
        Assert.Equal(1UL << 63, ImageFileBytes.ReadU64(img, 72) & (1UL << 63));
    }

    private static void AssertClean(string img)
    {
        var check = QemuTools.QemuImg("check", "--output=json", img);
        Assert.True(check.ExitCode == 0, $"qemu-img check ({check.ExitCode}): {check.StdOut}{check.StdErr}");
        var json = JsonNode.Parse(check.StdOut)!.AsObject();
        Assert.Equal(0, (int)json["check-errors"]!);
        Assert.Null(json["leaks"]);
        Assert.Null(json["corruptions"]);
        var info = JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut)!.AsObject();
        Assert.False((bool)info["dirty-flag"]!);
        Assert.False(File.Exists(img + ".journal"), "journal left beside a recovered image");
    }

    [QemuTheory]
    [InlineData("q2a", "")]
    [InlineData("q2a", "cluster_size=4k")]
    [InlineData("qemu-img", "compat=0.10")]
    [InlineData("qemu-img", "")]
    [InlineData("qemu-img", "refcount_bits=64,extended_l2=on")]
    public void A_pending_journal_is_replayed_and_the_image_is_plain_qcow2_again(string creator, string options)
    {
        string img = NewImage(creator, options.Length == 0 ? [] : [options]);
        CrashWithJournalPending(img);
        Assert.True(File.Exists(img + ".journal"));

        var refused = QemuTools.QemuImg("info", img);
        Assert.Equal(1, refused.ExitCode);

        var r = QemuTools.Q2a("recover", img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Equal($"Recovered '{img}': journal replayed, image is clean", r.StdOut.Trim());
        Assert.Equal("", r.StdErr);
        AssertClean(img);
        QemuTools.QemuIo("-r", "-c", "read -P 0x11 0 64k", img).EnsureSuccess();
        if (options.Contains("compat=0.10", StringComparison.Ordinal))
        {
            var info = JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut)!;
            Assert.Equal("0.10", (string)info["format-specific"]!["data"]!["compat"]!);
        }

        // An image qemu-img created as v3 lacks the name: see the test below.
        if (creator == "q2a" || options.Contains("compat=0.10", StringComparison.Ordinal))
            Assert.Contains($"Unsupported qcow2 feature(s): {JournalPendingName}", refused.StdErr, StringComparison.Ordinal);
    }

    /// <summary>
    /// ENGINE BUG (fails until fixed): QEMU names an unknown incompatible bit only from the image's
    /// feature name table. A v3 image qemu-img created carries QEMU's eight names only, and
    /// ImageContext.MarkDirty sets bit 63 without adding its name (only v2 images, through
    /// V2Promotion.Promote, get ImageCreator.FittingFeatureNames), so qemu-img says "Unknown
    /// incompatible feature: 8000000000000000" instead of naming "journal pending: run q2a recover".
    /// </summary>
    [QemuTheory]
    [InlineData("")]
    [InlineData("cluster_size=4k")]
    public void Qemu_names_the_journal_pending_bit_of_an_image_qemu_img_created(string options)
    {
        string img = NewImage("qemu-img", options.Length == 0 ? [] : [options]);
        CrashWithJournalPending(img);
        var refused = QemuTools.QemuImg("info", img);
        Assert.Equal(1, refused.ExitCode);
        Assert.Equal($"qemu-img: Could not open '{img}': Unsupported qcow2 feature(s): {JournalPendingName}", refused.StdErr.Trim());
        Assert.Equal(0, QemuTools.Q2a("recover", img).ExitCode);
        AssertClean(img);
    }

    [QemuFact]
    public void A_clean_image_is_left_untouched()
    {
        string img = NewImage("qemu-img");
        QemuTools.QemuIo("-c", "write -P 5 0 64k", img).EnsureSuccess();
        var before = File.ReadAllBytes(img);
        var r = QemuTools.Q2a("recover", img);
        Assert.Equal(0, r.ExitCode);
        Assert.Equal($"'{img}' is clean: nothing to recover", r.StdOut.Trim());
        Assert.Equal(before, File.ReadAllBytes(img));
    }

    [QemuFact]
    public void A_lazy_refcounts_image_qemu_left_dirty_gets_its_refcounts_rebuilt()
    {
        string img = NewImage("qemu-img", "lazy_refcounts=on");
        var io = QemuTools.QemuIo("-c", "write -P 7 1M 200k", "-c", "write -P 8 3M 64k", "-c", "abort", img);
        Assert.NotEqual(0, io.ExitCode);
        Assert.Equal(1UL, ImageFileBytes.ReadU64(img, 72) & 1);
        Assert.NotEqual(0, QemuTools.QemuImg("check", img).ExitCode); // refcounts lag behind the tables

        var r = QemuTools.Q2a("recover", img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Equal($"Recovered '{img}': image was left dirty, refcounts rebuilt from the tables, image is clean", r.StdOut.Trim());
        AssertClean(img);
        var info = JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut)!;
        Assert.True((bool)info["format-specific"]!["data"]!["lazy-refcounts"]!);
    }

    [QemuFact]
    public void A_missing_journal_is_refused_without_rebuild_and_rebuilt_with_it()
    {
        string img = NewImage("q2a");
        CrashWithJournalPending(img);
        File.Delete(img + ".journal");
        var before = File.ReadAllBytes(img);

        var refused = QemuTools.Q2a("recover", img);
        Assert.Equal(1, refused.ExitCode);
        var line = Assert.Single(refused.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("q2a: ", line, StringComparison.Ordinal);
        Assert.Contains("journal", line, StringComparison.Ordinal);
        Assert.Contains("is missing", line, StringComparison.Ordinal);
        Assert.Contains("q2a recover --rebuild", line, StringComparison.Ordinal);
        Assert.Equal(before, File.ReadAllBytes(img)); // refused before touching anything
        Assert.False(File.Exists(img + ".journal"));

        var r = QemuTools.Q2a("recover", "--rebuild", img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Equal($"Recovered '{img}': journal missing, refcounts rebuilt from the tables (writes since the last checkpoint are lost), image is clean",
            r.StdOut.Trim());
        AssertClean(img);
    }

    [QemuFact]
    public void Rebuild_with_the_journal_present_still_replays_it()
    {
        string img = NewImage("q2a");
        CrashWithJournalPending(img);
        var r = QemuTools.Q2a("recover", "--rebuild", img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Equal($"Recovered '{img}': journal replayed, image is clean", r.StdOut.Trim());
        AssertClean(img);
        QemuTools.QemuIo("-r", "-c", "read -P 0x11 0 64k", img).EnsureSuccess();
    }

    [QemuFact]
    public void A_corrupt_image_is_refused_and_points_at_check_repair()
    {
        string img = NewImage("qemu-img");
        ImageFileBytes.WriteU64(img, 72, ImageFileBytes.ReadU64(img, 72) | 2);
        var r = QemuTools.Q2a("recover", img);
        Assert.Equal(1, r.ExitCode);
        var line = Assert.Single(r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("check -r all", line, StringComparison.Ordinal);
    }

    [QemuFact]
    public void Bad_targets_fail_with_one_line()
    {
        string missing = _dir.File("missing.qcow2"), raw = _dir.File("raw.img");
        var r = QemuTools.Q2a("recover", missing);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"q2a: Could not open '{missing}': Could not open '{missing}': No such file or directory", r.StdErr.Trim());

        File.WriteAllBytes(raw, new byte[65536]);
        r = QemuTools.Q2a("recover", raw);
        Assert.Equal(1, r.ExitCode);
        var line = Assert.Single(r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"q2a: Could not open '{raw}': ", line, StringComparison.Ordinal);
    }
}
