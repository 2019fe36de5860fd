using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.InfoCheckImages;
using static Qcow2Actors.Tests.Shared.ImageFileBytes;
using static Qcow2Actors.Tests.Shared.QemuTools;

namespace Qcow2Actors.Interop.Tests;

public sealed class CheckInteropTests
{
    public static TheoryData<string> Kinds() => new(InfoCheckImages.Kinds);

    /// <summary>Runs both checkers; asserts the same exit code and the same JSON (every key and count).</summary>
    internal static JsonNode AssertSameCheck(string path)
    {
        var q = QemuImg("check", "--output=json", path);
        var a = Q2a("check", "--output", "json", path);
        Assert.True(q.ExitCode == a.ExitCode, $"exit: qemu-img {q.ExitCode} q2a {a.ExitCode}\nqemu-img: {q.StdErr}\nq2a: {a.StdErr}");
        if (q.StdOut.Length > 0)
        {
            var e = JsonNode.Parse(q.StdOut)!.AsObject();
            var x = JsonNode.Parse(a.StdOut)!.AsObject();
            foreach (var (key, value) in e)
                Assert.True(JsonNode.DeepEquals(value, x[key]), $"{key}: qemu-img {value} q2a {x[key]}\nqemu-img: {q.StdErr}\nq2a: {a.StdErr}");
            Assert.Equal(q.StdOut, a.StdOut);
        }
        Assert.DoesNotContain("   at ", a.StdErr, StringComparison.Ordinal);
        return a.StdOut.Length > 0 ? JsonNode.Parse(a.StdOut)! : new JsonObject();
    }

    [QemuTheory]
    [MemberData(nameof(Kinds))]
    public void Clean_images_of_every_kind_check_clean_with_qemu_img_numbers(string kind)
    {
        using var dir = new TempDir();
        var path = Make(dir, kind);
        AssertSameCheck(path);
        Assert.Equal(0, Q2a("check", path).ExitCode);
    }

    [QemuFact]
    public void Human_output_of_a_clean_check_is_qemu_img_s()
    {
        using var dir = new TempDir();
        var path = Make(dir, "zlib-compressed");
        Assert.Equal(QemuImg("check", path).StdOut, Q2a("check", path).StdOut);
    }

    [QemuFact]
    public void An_unreferenced_cluster_with_refcount_1_is_one_leak_and_exit_3()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var clusters = new FileInfo(path).Length / 65536;
        File.WriteAllBytes(path, File.ReadAllBytes(path).Concat(new byte[65536]).ToArray());
        WriteU16(path, RefcountEntry(path, clusters), 1);
        var json = AssertSameCheck(path);
        Assert.Equal(1, json["leaks"]!.GetValue<long>());
        Assert.Equal(3, Q2a("check", path).ExitCode);
        Assert.Contains("1 leaked clusters were found on the image.", Q2a("check", path).StdOut, StringComparison.Ordinal);
    }

    [QemuFact]
    public void Zeroing_a_data_cluster_refcount_is_two_corruptions_refcount_and_copied()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var data = (long)(ReadU64(path, FirstL2Entry(path)) & OffsetMask);
        WriteU16(path, RefcountEntry(path, data / 65536), 0);
        var json = AssertSameCheck(path);
        Assert.Equal(2, json["corruptions"]!.GetValue<long>());
    }

    [QemuFact]
    public void Raising_a_data_cluster_refcount_is_a_leak_plus_a_copied_mismatch()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var data = (long)(ReadU64(path, FirstL2Entry(path)) & OffsetMask);
        WriteU16(path, RefcountEntry(path, data / 65536), 2);
        var json = AssertSameCheck(path);
        Assert.Equal(1, json["leaks"]!.GetValue<long>());
        Assert.Equal(1, json["corruptions"]!.GetValue<long>());
    }

    [QemuFact]
    public void A_cleared_copied_flag_in_the_active_l2_is_a_corruption()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var l2 = FirstL2Entry(path);
        WriteU64(path, l2, ReadU64(path, l2) & ~(1UL << 63));
        Assert.Equal(1, AssertSameCheck(path)["corruptions"]!.GetValue<long>());
    }

    [QemuFact]
    public void A_cleared_copied_flag_in_the_active_l1_is_a_corruption()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var l1 = (long)ReadU64(path, 40);
        WriteU64(path, l1, ReadU64(path, l1) & ~(1UL << 63));
        Assert.Equal(1, AssertSameCheck(path)["corruptions"]!.GetValue<long>());
    }

    [QemuFact]
    public void Two_l2_entries_pointing_at_one_cluster_are_a_corruption_and_the_orphan_a_leak()
    {
        using var dir = new TempDir();
        var path = Make(dir, "v3");
        var l2 = FirstL2Entry(path);
        WriteU64(path, l2 + 8, ReadU64(path, l2));
        var json = AssertSameCheck(path);
        Assert.Equal(1, json["corruptions"]!.GetValue<long>());
        Assert.Equal(1, json["leaks"]!.GetValue<long>());
    }

    [QemuTheory]
    [InlineData("refcount1")]
    [InlineData("refcount4")]
    [InlineData("refcount64")]
    public void Sub_byte_and_wide_refcounts_are_compared_at_their_width(string kind)
    {
        using var dir = new TempDir();
        var path = Make(dir, kind);
        // Clear the whole first refcount block: every used cluster now has stored refcount 0.
        var block = (long)ReadU64(path, (long)ReadU64(path, 48));
        WriteAt(path, block, new byte[512]);
        Assert.True(AssertSameCheck(path)["corruptions"]!.GetValue<long>() > 0);
    }

    [QemuFact]
    public void A_snapshot_shared_cluster_with_refcount_lowered_to_1_is_caught_like_qemu_img()
    {
        using var dir = new TempDir();
        var path = Make(dir, "snapshots");
        // Cluster 1 of the guest is still shared by both snapshots and the active layer (refcount 3).
        var l2 = FirstL2Entry(path);
        var data = (long)(ReadU64(path, l2 + 8) & OffsetMask);
        WriteU16(path, RefcountEntry(path, data / 65536), 1);
        Assert.True(AssertSameCheck(path)["corruptions"]!.GetValue<long>() >= 1);
    }
}
