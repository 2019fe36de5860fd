using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Tests.Shared.QemuTools;

namespace Qcow2Actors.Interop.Tests;

public sealed class InfoInteropTests
{
    public static TheoryData<string> Kinds() => new(InfoCheckImages.Kinds);

    private static string WithoutActualSize(string json) =>
        string.Join('\n', json.Split('\n').Where(l => !l.Contains("\"actual-size\"", StringComparison.Ordinal)));

    [QemuTheory]
    [MemberData(nameof(Kinds))]
    public void Info_json_is_identical_to_qemu_img_apart_from_actual_size(string kind)
    {
        using var dir = new TempDir();
        var path = InfoCheckImages.Make(dir, kind);
        var expected = QemuImg("info", "--output=json", path).EnsureSuccess().StdOut;
        var actual = Q2a("info", "--output", "json", path).EnsureSuccess().StdOut;

        // Field by field first, so a failure names the field; then byte for byte, which includes QEMU's key order.
        var e = JsonNode.Parse(expected)!.AsObject();
        var a = JsonNode.Parse(actual)!.AsObject();
        e.Remove("actual-size");
        a.Remove("actual-size");
        foreach (var (key, value) in e)
            Assert.True(JsonNode.DeepEquals(value, a[key]), $"{key}: qemu-img {value?.ToJsonString()} q2a {a[key]?.ToJsonString()}");
        Assert.Equal(e.Select(p => p.Key).Order(), a.Select(p => p.Key).Order());
        Assert.Equal(WithoutActualSize(expected), WithoutActualSize(actual));
    }

    [QemuTheory]
    [InlineData("v3")]
    [InlineData("snapshots")]
    [InlineData("bitmaps")]
    [InlineData("overlay")]
    [InlineData("datafile")]
    public void Info_human_output_matches_qemu_img_apart_from_disk_size(string kind)
    {
        using var dir = new TempDir();
        var path = InfoCheckImages.Make(dir, kind);
        static string Strip(string s) => string.Join('\n', s.Split('\n').Where(l => !l.StartsWith("disk size:", StringComparison.Ordinal)));
        Assert.Equal(Strip(QemuImg("info", path).EnsureSuccess().StdOut), Strip(Q2a("info", path).EnsureSuccess().StdOut));
    }

    [QemuFact]
    public void Backing_chain_json_lists_the_overlay_then_its_backing_file_as_qemu_img_does()
    {
        using var dir = new TempDir();
        var path = InfoCheckImages.Make(dir, "overlay");
        var expected = QemuImg("info", "--backing-chain", "--output=json", path).EnsureSuccess().StdOut;
        var actual = Q2a("info", "--backing-chain", "--output=json", path).EnsureSuccess().StdOut;
        Assert.Equal(WithoutActualSize(expected), WithoutActualSize(actual));
    }

    [QemuFact]
    public void Dirty_and_corrupt_bits_show_in_info_as_qemu_img_shows_them()
    {
        using var dir = new TempDir();
        var path = InfoCheckImages.Make(dir, "v3");
        ImageFileBytes.WriteU64(path, 72, ImageFileBytes.ReadU64(path, 72) | 3);
        var a = JsonNode.Parse(Q2a("info", "--output=json", path).EnsureSuccess().StdOut)!;
        var e = JsonNode.Parse(QemuImg("info", "--output=json", path).EnsureSuccess().StdOut)!;
        Assert.True(a["dirty-flag"]!.GetValue<bool>());
        Assert.True(a["format-specific"]!["data"]!["corrupt"]!.GetValue<bool>());
        Assert.True(JsonNode.DeepEquals(e["format-specific"], a["format-specific"]));
    }
}
