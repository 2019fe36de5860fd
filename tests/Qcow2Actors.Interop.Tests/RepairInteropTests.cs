using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.InfoCheckImages;
using static Qcow2Actors.Tests.Shared.ImageFileBytes;
using static Qcow2Actors.Tests.Shared.QemuTools;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a check -r</c> against <c>qemu-img check -r</c> on identical copies of each damaged image:
/// same exit code, same fixed counts, and afterwards an image qemu-img finds clean whose guest
/// content equals qemu's repaired copy.
/// </summary>
public sealed class RepairInteropTests
{
    private static readonly Dictionary<string, (string Kind, Action<string> Damage)> Cases = new()
    {
        ["leak"] = ("v3", p =>
        {
            var clusters = new FileInfo(p).Length / 65536;
            WriteAt(p, new FileInfo(p).Length, new byte[65536]);
            WriteU16(p, RefcountEntry(p, clusters), 1);
        }),
        ["zeroed refcount"] = ("v3", p => WriteU16(p, RefcountEntry(p, DataCluster(p)), 0)),
        ["raised refcount"] = ("v3", p => WriteU16(p, RefcountEntry(p, DataCluster(p)), 2)),
        ["cleared copied in l1"] = ("v3", p => { var l1 = (long)ReadU64(p, 40); WriteU64(p, l1, ReadU64(p, l1) & ~(1UL << 63)); }),
        ["cleared copied in l2"] = ("v3", p => { var l2 = FirstL2Entry(p); WriteU64(p, l2, ReadU64(p, l2) & ~(1UL << 63)); }),
        ["cleared refcount block, 1 bit"] = ("refcount1", ClearFirstRefcountBlock),
        ["cleared refcount block, 4 bits"] = ("refcount4", ClearFirstRefcountBlock),
        ["cleared refcount block, 64 bits"] = ("refcount64", ClearFirstRefcountBlock),
        ["refcount block past the end of the file"] = ("v3", p => WriteU64(p, (long)ReadU64(p, 48), 0x40000000)),
        ["two l2 entries mapping one cluster"] = ("v3", p => { var l2 = FirstL2Entry(p); WriteU64(p, l2 + 8, ReadU64(p, l2)); }),
        ["snapshot-shared cluster lowered to 1"] = ("snapshots", p =>
        {
            var data = (long)(ReadU64(p, FirstL2Entry(p) + 8) & OffsetMask);
            WriteU16(p, RefcountEntry(p, data / 65536), 1);
        }),
        ["misaligned preallocated zero cluster"] = ("v3", p => WriteU64(p, FirstL2Entry(p) + 8 * 200, 0x50201)),
        ["lazy refcounts killed mid-write"] = ("lazy", p =>
        {
            var io = QemuIo("-c", "write -P 7 1M 200k", "-c", "write -P 8 3M 64k", "-c", "abort", p);
            Assert.NotEqual(0, io.ExitCode);
            Assert.Equal(1UL, ReadU64(p, 72) & 1);
        }),
    };

    private static long DataCluster(string p) => (long)(ReadU64(p, FirstL2Entry(p)) & OffsetMask) / 65536;

    private static void ClearFirstRefcountBlock(string p) => WriteAt(p, (long)ReadU64(p, (long)ReadU64(p, 48)), new byte[512]);

    public static TheoryData<string> Names() => new(Cases.Keys);

    private sealed record Pair(string Original, string Ours, string Theirs, QemuTools.Result Q2aRun, QemuTools.Result QemuRun);

    private static Pair RepairBoth(TempDir dir, string name, string mode, params string[] extra)
    {
        var (kind, damage) = Cases[name];
        var original = Make(dir, kind);
        damage(original);
        var ours = dir.File("ours.qcow2");
        var theirs = dir.File("theirs.qcow2");
        File.Copy(original, ours);
        File.Copy(original, theirs);
        var q = QemuImg(["check", "-r", mode, .. extra, theirs]);
        var a = Q2a(["check", "-r", mode, .. extra, ours]);
        Assert.DoesNotContain("   at ", a.StdErr, StringComparison.Ordinal);
        Assert.True(q.ExitCode == a.ExitCode, $"exit: qemu-img {q.ExitCode} q2a {a.ExitCode}\nqemu-img: {q.StdErr}\nq2a: {a.StdErr}");
        return new Pair(original, ours, theirs, a, q);
    }

    private static JsonObject WithoutLayoutKeys(string json)
    {
        var o = JsonNode.Parse(json)!.AsObject();
        // Where the new refcount structure goes (and the file's name) is ours to choose.
        o.Remove("filename");
        o.Remove("image-end-offset");
        return o;
    }

    [QemuTheory]
    [MemberData(nameof(Names))]
    public void Repair_all_agrees_with_qemu_img_and_leaves_a_clean_image_with_the_same_content(string name)
    {
        using var dir = new TempDir();
        var r = RepairBoth(dir, name, "all", "--output=json");

        Assert.Equal(0, r.Q2aRun.ExitCode);
        Assert.True(JsonNode.DeepEquals(WithoutLayoutKeys(r.QemuRun.StdOut), WithoutLayoutKeys(r.Q2aRun.StdOut)),
            $"qemu-img: {r.QemuRun.StdOut}\nq2a: {r.Q2aRun.StdOut}");
        var check = QemuImg("check", "--output=json", r.Ours);
        Assert.True(check.ExitCode == 0, check.StdErr + check.StdOut);
        Assert.Equal(0, JsonNode.Parse(check.StdOut)!["check-errors"]!.GetValue<long>());
        Assert.Null(JsonNode.Parse(check.StdOut)!["corruptions"]);
        Assert.Null(JsonNode.Parse(check.StdOut)!["leaks"]);
        var compare = QemuImg("compare", r.Ours, r.Theirs);
        Assert.True(compare.ExitCode == 0, compare.StdOut + compare.StdErr);
        // The dirty bit (lazy refcounts) is cleared once the refcounts are exact.
        Assert.Equal(0UL, ReadU64(r.Ours, 72) & 3);
    }

    [QemuTheory]
    [MemberData(nameof(Names))]
    public void Repair_leaks_agrees_with_qemu_img_and_writes_nothing_when_it_refuses(string name)
    {
        using var dir = new TempDir();
        var r = RepairBoth(dir, name, "leaks", "--output=json");

        if (r.QemuRun.ExitCode == 1)
        {
            Assert.Equal("", r.Q2aRun.StdOut);
            Assert.Contains("Check failed: Input/output error", r.Q2aRun.StdErr, StringComparison.Ordinal);
            Assert.Equal(File.ReadAllBytes(r.Original), File.ReadAllBytes(r.Ours));
            return;
        }
        Assert.True(JsonNode.DeepEquals(WithoutLayoutKeys(r.QemuRun.StdOut), WithoutLayoutKeys(r.Q2aRun.StdOut)),
            $"qemu-img: {r.QemuRun.StdOut}\nq2a: {r.Q2aRun.StdOut}");
        // Whatever remains, both copies now check the same and hold the same guest data.
        var ours = QemuImg("check", "--output=json", r.Ours);
        var theirs = QemuImg("check", "--output=json", r.Theirs);
        Assert.Equal(theirs.ExitCode, ours.ExitCode);
        Assert.True(JsonNode.DeepEquals(WithoutLayoutKeys(theirs.StdOut), WithoutLayoutKeys(ours.StdOut)), $"qemu-img: {theirs.StdOut}\nq2a: {ours.StdOut}");
        // qemu-img refuses to read through a corrupt entry (compare exits 3), so compare only what it can read.
        if (theirs.ExitCode != 2) Assert.Equal(0, QemuImg("compare", r.Ours, r.Theirs).ExitCode);
    }

    [QemuTheory]
    [InlineData("leak", "all")]
    [InlineData("zeroed refcount", "all")]
    [InlineData("cleared copied in l2", "leaks")]
    [InlineData("two l2 entries mapping one cluster", "all")]
    [InlineData("zeroed refcount", "leaks")]
    public void Human_output_and_messages_are_qemu_img_s(string name, string mode)
    {
        using var dir = new TempDir();
        var r = RepairBoth(dir, name, mode);

        Assert.Equal(r.QemuRun.StdOut, r.Q2aRun.StdOut);
        Assert.Equal(r.QemuRun.StdErr.Replace("qemu-img: ", "q2a: ", StringComparison.Ordinal), r.Q2aRun.StdErr);
    }

    [QemuFact]
    public void A_repaired_leak_reads_the_counts_qemu_img_prints_before_double_checking()
    {
        using var dir = new TempDir();
        var r = RepairBoth(dir, "raised refcount", "all");

        Assert.Contains("The following inconsistencies were found and repaired:\n\n    1 leaked clusters\n    0 corruptions\n\nDouble checking the fixed image now...\nNo errors were found on the image.",
            r.Q2aRun.StdOut, StringComparison.Ordinal);
    }

    [QemuFact]
    public void Leaks_repair_of_a_lazy_image_keeps_the_dirty_bit_while_refcounts_are_still_wrong()
    {
        // qemu-img clears the dirty bit when it closes the image even though its -r leaks failed;
        // we keep it, so the next write open still rebuilds the refcounts.
        using var dir = new TempDir();
        var r = RepairBoth(dir, "lazy refcounts killed mid-write", "leaks");

        Assert.Equal(1, r.Q2aRun.ExitCode);
        Assert.Equal(1UL, ReadU64(r.Ours, 72) & 1);
    }

    [QemuFact]
    public void A_refcount_table_entry_with_reserved_bits_is_rebuilt_where_qemu_img_trips_over_its_own_overlap_check()
    {
        // qemu-img 7.2 rebuilds into the cluster of the old block, which its overlap check still
        // guards, and fails with exit 1; our new structure goes past everything, so the repair completes.
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var table = (long)ReadU64(path, 48);
        WriteU64(path, table, ReadU64(path, table) | 1);
        var original = dir.File("original.qcow2");
        File.Copy(path, original);

        var a = Q2a("check", "-r", "all", path);

        Assert.Equal(0, a.ExitCode);
        Assert.Contains("Rebuilding refcount structure", a.StdErr, StringComparison.Ordinal);
        Assert.Equal(0, QemuImg("check", path).ExitCode);
        Assert.Equal(0, QemuImg("compare", original, path).ExitCode);
    }

    [QemuFact]
    public void An_unknown_repair_mode_is_refused_like_qemu_img()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var a = Q2a("check", "-r", "everything", path);
        Assert.Equal(1, a.ExitCode);
        Assert.Contains("Unknown option value for -r (expecting 'leaks' or 'all'): everything", a.StdErr, StringComparison.Ordinal);
    }
}
