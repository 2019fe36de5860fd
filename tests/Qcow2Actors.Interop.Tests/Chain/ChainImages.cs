using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Chain;

/// <summary>
/// A three-image chain made by qemu-img and qemu-io (base ← mid ← top, each writing its own
/// pattern, the top a zero cluster too), made twice in sibling directories so one verb runs on
/// q2a and on qemu-img with the same inputs; and the oracle's views of the results.
/// </summary>
internal static class ChainImages
{
    public const string Base = "base.qcow2", Mid = "mid.qcow2", Top = "top.qcow2";

    /// <summary>Makes the chain in <paramref name="dir"/>; <paramref name="mib"/> scales the data (the crash tests want more).</summary>
    public static void Make(string dir, int mib = 4)
    {
        Directory.CreateDirectory(dir);
        string P(string name) => Path.Combine(dir, name);
        string size = $"{mib}M";
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", P(Base), size).EnsureSuccess();
        QemuTools.QemuIo("-c", $"write -P 0x11 0 {mib / 4 * 1024}k", P(Base)).EnsureSuccess();
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-b", Base, "-F", "qcow2", P(Mid)).EnsureSuccess();
        QemuTools.QemuIo("-c", $"write -P 0x22 {mib / 4 * 1024}k {mib / 4 * 1024}k", "-c", "write -P 0x23 100000 3000", P(Mid)).EnsureSuccess();
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-b", Mid, "-F", "qcow2", P(Top)).EnsureSuccess();
        QemuTools.QemuIo("-c", $"write -P 0x33 {mib / 8 * 1024}k {mib / 4 * 1024}k", "-c", $"write -z {mib * 3 / 4 * 1024}k 64k", "-c", "write -P 0x34 7000 1000", P(Top)).EnsureSuccess();
    }

    /// <summary>The guest content of <paramref name="image"/> (its whole chain) as a raw file beside it.</summary>
    public static string View(string image, string name)
    {
        var raw = Path.Combine(Path.GetDirectoryName(image)!, name);
        QemuTools.QemuImg("convert", "-U", "-O", "raw", image, raw).EnsureSuccess();
        return raw;
    }

    public static void AssertSameContent(string a, string b)
    {
        var cmp = QemuTools.QemuImg("compare", "-U", a, b);
        Assert.True(cmp.ExitCode == 0, $"qemu-img compare {a} {b}: {cmp.StdOut}{cmp.StdErr}");
    }

    /// <summary>qemu-img check's JSON verdict: no errors, no leaks, no corruptions.</summary>
    public static void AssertCheckClean(string image)
    {
        var check = QemuTools.QemuImg("check", "--output=json", image);
        Assert.True(check.ExitCode == 0, $"qemu-img check {image}: {check.StdOut}{check.StdErr}");
        var json = JsonNode.Parse(check.StdOut)!.AsObject();
        Assert.Equal(0, (int)json["check-errors"]!);
        Assert.Null(json["leaks"]);
        Assert.Null(json["corruptions"]);
    }

    /// <summary>The backing file name and format in qemu-img info's JSON (nulls without one).</summary>
    public static (string? Name, string? Format) Backing(string image)
    {
        var info = JsonNode.Parse(QemuTools.QemuImg("info", "-U", "--output=json", image).EnsureSuccess().StdOut)!.AsObject();
        return ((string?)info["backing-filename"], (string?)info["backing-filename-format"]);
    }
}
