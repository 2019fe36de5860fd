using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// A crashed image (our journal-pending bit 63 set, the journal beside it) as a user inspects it:
/// every read-only verb shows it exactly as <c>q2a recover</c> will leave it — judged by running
/// the same verb on a copy that was recovered — and writes nothing; <c>check -r</c> recovers it;
/// without its journal every verb fails in one line naming <c>q2a recover --rebuild</c>.
/// </summary>
public sealed class PendingJournalInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    // What a reader must see once the flushed part of the crash workload is recovered.
    private static readonly string[] RecoveredReads =
    [
        "read -P 0x11 0 64k", "read -P 0 64k 64k", "read -P 0x11 128k 64k", "read -P 0 1M 64k", "read -P 0x13 2M 128k",
    ];

    private static QemuTools.Result Q2a(params string[] args) => QemuTools.Q2a(args);

    private static QemuTools.Result Q2aIo(string image, bool readOnly, params string[] commands) =>
        QemuTools.Q2a(["io", .. readOnly ? new[] { "-r" } : [], .. commands.SelectMany(c => new[] { "-c", c }), image]);

    /// <summary>
    /// A new 8 MiB image, then allocations, a zero write, a discard and an unflushed write across
    /// two flushes, ended by abort (SIGKILL of ourselves): the journal holds both flushed batches.
    /// </summary>
    private string Crashed(string creator, string options)
    {
        string img = _dir.File($"img{Guid.NewGuid():N}.qcow2");
        string[] args = ["create", "-q", "-f", "qcow2", .. options.Length == 0 ? [] : new[] { "-o", options }, img, "8M"];
        (creator == "q2a" ? Q2a(args) : QemuTools.QemuImg(args)).EnsureSuccess();
        var crashed = Q2aIo(img, false, "write -P 0x11 0 192k", "write -P 0x12 1M 64k", "flush",
            "write -z 64k 64k", "discard 1M 64k", "write -P 0x13 2M 128k", "flush", "write -P 0x14 3M 64k", "abort");
        Assert.NotEqual(0, crashed.ExitCode);
        Assert.Contains("wrote 65536/65536 bytes at offset 3145728", crashed.StdOut, StringComparison.Ordinal);
        Assert.Equal(1UL << 63, ImageFileBytes.ReadU64(img, 72) & (1UL << 63));
        Assert.True(File.Exists(img + ".journal"), "the crash left no journal");
        return img;
    }

    /// <summary>A copy of the image and its journal under another name, recovered with <c>q2a recover</c>.</summary>
    private string RecoveredTwin(string img)
    {
        string twin = _dir.File($"twin{Guid.NewGuid():N}.qcow2");
        File.Copy(img, twin);
        File.Copy(img + ".journal", twin + ".journal");
        var r = Q2a("recover", twin);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        return twin;
    }

    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    private static JsonObject Json(QemuTools.Result r) => JsonNode.Parse(r.EnsureSuccess().StdOut)!.AsObject();

    private static JsonObject CheckJson(string img, out int exitCode)
    {
        var r = Q2a("check", "--output", "json", img);
        exitCode = r.ExitCode;
        var o = JsonNode.Parse(r.StdOut)!.AsObject();
        o.Remove("filename");
        return o;
    }

    [QemuTheory]
    [InlineData("q2a", "cluster_size=4k")]
    [InlineData("qemu-img", "")]
    [InlineData("qemu-img", "compat=0.10")]
    public void Every_read_only_verb_shows_a_crashed_image_as_recover_leaves_it_and_writes_nothing(string creator, string options)
    {
        string img = Crashed(creator, options);
        string journal = img + ".journal";
        string imageHash = Hash(img), journalHash = Hash(journal);
        var qemuRefusal = QemuTools.QemuImg("info", img);
        Assert.Equal(1, qemuRefusal.ExitCode);

        var info = Json(Q2a("info", "--output", "json", img));
        Assert.True((bool)info["format-specific"]!["data"]!["journal-pending"]!);
        Assert.False((bool)info["dirty-flag"]!); // as recovery leaves it
        var human = Q2a("info", img).EnsureSuccess().StdOut;
        Assert.Contains("\n    journal pending: true\n", human, StringComparison.Ordinal);
        string map = Q2a("map", "--output", "json", img).EnsureSuccess().StdOut;
        string raw = _dir.File("pending.raw");
        Q2a("convert", "-O", "raw", img, raw).EnsureSuccess();
        var reads = Q2aIo(img, true, RecoveredReads);
        Assert.True(reads.ExitCode == 0, reads.StdOut + reads.StdErr);
        Assert.DoesNotContain("Pattern verification failed", reads.StdOut + reads.StdErr, StringComparison.Ordinal);
        var check = Q2a("check", img);
        Assert.StartsWith($"'{img}' has a journal pending: checked as 'q2a recover' will leave it", check.StdOut, StringComparison.Ordinal);
        var checkJson = CheckJson(img, out int checkExit);
        Assert.Equal(check.ExitCode, checkExit);

        // Read-only means read-only: not one byte of the image or its journal changed, nothing appeared beside them.
        Assert.Equal(imageHash, Hash(img));
        Assert.Equal(journalHash, Hash(journal));
        string[] expected = [Path.GetFileName(img), Path.GetFileName(journal), "pending.raw"];
        Assert.Equal(expected, Directory.GetFiles(_dir.Path).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToArray());

        string twin = RecoveredTwin(img);
        Q2a("compare", img, twin).EnsureSuccess();
        string recoveredRaw = _dir.File("recovered.raw");
        Q2a("convert", "-O", "raw", twin, recoveredRaw).EnsureSuccess();
        Assert.Equal(Hash(recoveredRaw), Hash(raw));
        Assert.Equal(map, Q2a("map", "--output", "json", twin).EnsureSuccess().StdOut);
        Assert.Equal(checkJson.ToJsonString(), CheckJson(twin, out int twinExit).ToJsonString());
        Assert.Equal(twinExit, check.ExitCode);
        Assert.Equal(QemuTools.QemuImg("check", twin).ExitCode, check.ExitCode);
        var twinInfo = Json(Q2a("info", "--output", "json", twin));
        Assert.Null(twinInfo["format-specific"]!["data"]!["journal-pending"]);
        // The rest of info is what the recovered image reports (file names and host usage aside).
        foreach (var o in new[] { info, twinInfo })
        {
            o.Remove("filename");
            o.Remove("actual-size");
            o["format-specific"]!["data"]!.AsObject().Remove("journal-pending");
        }
        Assert.Equal(twinInfo.ToJsonString(), info.ToJsonString());
        // QEMU reads the recovered twin as we read the pending image.
        QemuTools.QemuIo(["-r", .. RecoveredReads.SelectMany(c => new[] { "-c", c }), twin]).EnsureSuccess();
        QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", twin, raw).EnsureSuccess();
    }

    [QemuTheory]
    [InlineData("all")]
    [InlineData("leaks")]
    public void Check_repair_recovers_a_crashed_image_then_checks_it(string mode)
    {
        string img = Crashed("q2a", "");
        string raw = _dir.File("pending.raw");
        Q2a("convert", "-O", "raw", img, raw).EnsureSuccess();

        var r = Q2a("check", "-r", mode, img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Contains($"Recovered '{img}': journal replayed, image is clean", r.StdOut, StringComparison.Ordinal);
        Assert.Contains("No errors were found on the image.", r.StdOut, StringComparison.Ordinal);
        Assert.False(File.Exists(img + ".journal"), "journal left beside a recovered image");
        Assert.Equal(0UL, ImageFileBytes.ReadU64(img, 72) & ((1UL << 63) | 1));
        QemuTools.AssertCheckClean(img);
        QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", img, raw).EnsureSuccess();
    }

    [QemuFact]
    public void Check_repair_with_json_output_keeps_stdout_one_json_document()
    {
        string img = Crashed("q2a", "");
        var r = Q2a("check", "-r", "all", "--output", "json", img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Equal(0, (int)JsonNode.Parse(r.StdOut)!["check-errors"]!);
        Assert.Contains("journal replayed", r.StdErr, StringComparison.Ordinal);
        QemuTools.AssertCheckClean(img);
    }

    /// <summary>
    /// An image the overlap check marked corrupt while its journal was pending: recover refuses it
    /// (corrupt), so check -r all must replay the journal itself and then repair — no dead end.
    /// </summary>
    [QemuFact]
    public void A_crashed_image_also_marked_corrupt_reads_replayed_and_check_repair_all_replays_then_repairs_it()
    {
        string img = Crashed("q2a", "");
        ImageFileBytes.WriteU64(img, 72, ImageFileBytes.ReadU64(img, 72) | 2);
        string imageHash = Hash(img);

        var info = Json(Q2a("info", "--output", "json", img));
        Assert.True((bool)info["format-specific"]!["data"]!["journal-pending"]!);
        Assert.True((bool)info["format-specific"]!["data"]!["corrupt"]!);
        string raw = _dir.File("pending.raw");
        Q2a("convert", "-O", "raw", img, raw).EnsureSuccess();
        Assert.Equal(0, Q2aIo(img, true, RecoveredReads).ExitCode);
        Assert.Equal(imageHash, Hash(img));
        var refused = Q2a("recover", img);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("check -r all", refused.StdErr, StringComparison.Ordinal);

        var r = Q2a("check", "-r", "all", img);
        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Contains("Replayed the pending journal", r.StdOut, StringComparison.Ordinal);
        Assert.False(File.Exists(img + ".journal"), "journal left beside a repaired image");
        Assert.Equal(0UL, ImageFileBytes.ReadU64(img, 72) & ((1UL << 63) | 3));
        QemuTools.AssertCheckClean(img);
        QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", img, raw).EnsureSuccess();
    }

    [QemuFact]
    public void Without_its_journal_every_verb_fails_in_one_line_naming_recover_rebuild()
    {
        string img = Crashed("q2a", "");
        File.Delete(img + ".journal");
        string imageHash = Hash(img);
        string clean = _dir.File("clean.qcow2");
        Q2a("create", "-q", "-f", "qcow2", clean, "8M").EnsureSuccess();

        string[][] verbs =
        [
            ["info", img], ["info", "--output", "json", img], ["check", img], ["check", "-r", "all", img], ["map", img],
            ["convert", "-O", "raw", img, _dir.File("out.raw")], ["compare", img, clean], ["io", "-r", "-c", "read 0 64k", img],
        ];
        foreach (var verb in verbs)
        {
            var r = Q2a(verb);
            Assert.True(r.ExitCode != 0, $"{string.Join(' ', verb)} succeeded: {r.StdOut}");
            var line = Assert.Single(r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith("q2a: ", line, StringComparison.Ordinal);
            Assert.Contains("is missing", line, StringComparison.Ordinal);
            Assert.Contains("q2a recover --rebuild", line, StringComparison.Ordinal);
        }
        Assert.Equal(imageHash, Hash(img));
        Assert.False(File.Exists(img + ".journal"), "a read-only verb created a journal");

        // QEMU names the way out as well.
        var qemu = QemuTools.QemuImg("info", img);
        Assert.Contains($"Unsupported qcow2 feature(s): {FeatureNameTable.JournalPendingName}", qemu.StdErr, StringComparison.Ordinal);
    }
}
