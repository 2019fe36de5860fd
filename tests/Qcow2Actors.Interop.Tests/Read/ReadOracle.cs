using System.Text.Json.Nodes;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Read;

/// <summary>
/// Builds images with qemu-img/qemu-io and checks our read path against QEMU's own answer:
/// convert to raw must be byte-identical, map JSON must be equal, compare must say identical.
/// The verbs run in process here (fast); CliVerbTests run the real q2a executable.
/// </summary>
internal static class ReadOracle
{
    public static void Qemu(params string[] args) => QemuTools.QemuImg(args).EnsureSuccess();

    public static void Io(string image, IEnumerable<string> commands, string? format = null)
    {
        var args = new List<string>();
        if (format is not null) { args.Add("-f"); args.Add(format); }
        foreach (var c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        QemuTools.Run("qemu-io", args).EnsureSuccess();
    }

    /// <summary>
    /// Seeded writes of patterned data and zeroes at sector-aligned offsets of mixed sizes, some
    /// crossing cluster and L2 boundaries; the same seed gives the same image every run.
    /// </summary>
    public static List<string> RandomWrites(int seed, long size, int count, int maxLength = 192 * 1024, bool zeroes = true, int align = 512)
    {
        var rng = new Random(seed);
        var cmds = new List<string>();
        for (int i = 0; i < count; i++)
        {
            long len = Math.Max(align, rng.Next(1, maxLength / align + 1) * (long)align);
            long off = rng.NextInt64(0, (size - len) / align + 1) * align;
            cmds.Add(zeroes && rng.Next(5) == 0 ? $"write -z {off} {len}" : $"write -P {rng.Next(1, 256)} {off} {len}");
        }
        return cmds;
    }

    /// <summary>Asserts convert, map and compare agree with qemu-img for <paramref name="image"/>.</summary>
    public static async Task AssertMatchesQemuAsync(TempDir dir, string image, string? format = null, string? snapshot = null)
    {
        string ours = dir.File($"ours-{Guid.NewGuid():N}.raw");
        string theirs = dir.File($"qemu-{Guid.NewGuid():N}.raw");
        var qargs = new List<string> { "convert" };
        if (format is not null) { qargs.Add("-f"); qargs.Add(format); }
        if (snapshot is not null) { qargs.Add("-l"); qargs.Add(snapshot); }
        qargs.AddRange(["-O", "raw", image, theirs]);
        QemuTools.QemuImg([.. qargs]).EnsureSuccess();

        Assert.Equal(0, await ConvertCommand.RunAsync(image, ours, format, "raw", snapshot, false, CancellationToken.None));
        AssertSameBytes(theirs, ours);

        if (snapshot is null)
        {
            var margs = new List<string> { "map", "--output=json" };
            if (format is not null) { margs.Add("-f"); margs.Add(format); }
            margs.Add(image);
            string qemuMap = QemuTools.QemuImg([.. margs]).EnsureSuccess().StdOut;
            string ourMap = await MapJsonAsync(image, format);
            AssertSameJson(qemuMap, ourMap);

            var sw = new StringWriter();
            Assert.Equal(0, await CompareCommand.RunAsync(image, theirs, format, "raw", sw, CancellationToken.None));
            Assert.Equal("Images are identical.", sw.ToString().Trim());
        }
    }

    public static async Task<string> MapJsonAsync(string image, string? format = null)
    {
        var sw = new StringWriter();
        Assert.Equal(0, await MapCommand.RunAsync(image, format, "json", sw, CancellationToken.None));
        return sw.ToString();
    }

    public static void AssertSameJson(string expected, string actual)
    {
        var e = JsonNode.Parse(expected);
        var a = JsonNode.Parse(actual);
        Assert.True(JsonNode.DeepEquals(e, a), $"map differs from qemu-img map\nqemu-img:\n{expected}\nq2a:\n{actual}");
    }

    public static void AssertSameBytes(string expectedPath, string actualPath)
    {
        var e = File.ReadAllBytes(expectedPath);
        var a = File.ReadAllBytes(actualPath);
        Assert.Equal(e.Length, a.Length);
        int diff = e.AsSpan().CommonPrefixLength(a);
        Assert.True(diff == e.Length, $"convert output differs from qemu-img's at byte {diff}");
    }

    public static async Task<byte[]> ReadAllAsync(string image, Qcow2OpenOptions? options = null)
    {
        await using var img = await Qcow2Image.OpenAsync(image, options);
        var buffer = new byte[img.VirtualSize];
        await img.ReadAsync(0, buffer);
        return buffer;
    }
}
