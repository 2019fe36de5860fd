using System.Text.Json.Nodes;
using Qcow2Actors.Cli;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a convert -O qcow2 [-c] [-o ...] [-B ... -F ...]</c> through the write engine, judged by
/// QEMU alone: the target passes <c>qemu-img check</c> (no errors, no leaks), <c>qemu-img compare</c>
/// finds it identical to the source, and with <c>-c</c> check counts compressed clusters.
/// Most cases run the verb in process (fast); a few run the q2a executable as a user does.
/// </summary>
public sealed class ConvertQcow2InteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Source images QEMU makes: name → (qemu-img create -o options, size, extra step).</summary>
    public static TheoryData<string> Sources => new()
    {
        "plain", "compressed", "zero-clusters", "chain", "v2", "c512", "c4k", "c2M", "refcount1", "refcount64", "extended-l2", "unaligned-size", "raw",
    };

    private string MakeSource(string kind)
    {
        string img = _dir.File($"src-{kind}.qcow2");
        string size = "24M";
        string[] opts = kind switch
        {
            "v2" => ["compat=0.10"],
            "c512" => ["cluster_size=512"],
            "c4k" => ["cluster_size=4k"],
            "c2M" => ["cluster_size=2M"],
            "refcount1" => ["refcount_bits=1"],
            "refcount64" => ["refcount_bits=64"],
            "extended-l2" => ["extended_l2=on,cluster_size=128k"],
            _ => [],
        };
        if (kind == "unaligned-size") size = $"{(24 << 20) + 3 * 512}";
        var writes = RandomWrites(kind.Sum(c => c), 20 << 20, 40);
        // Data that is zero inside allocated clusters: convert must skip it (qemu-img's -S 4k).
        writes.Add("write -P 0 21M 256k");
        writes.Add("write -P 5 22M 4k");
        if (kind == "unaligned-size") writes.Add($"write -P 9 {(24 << 20) - 4096} {4096 + 3 * 512}");
        if (kind == "raw")
        {
            string raw = _dir.File("src-raw.img");
            Qemu("create", "-q", "-f", "raw", raw, size);
            Io(raw, writes, "raw");
            return raw;
        }
        if (kind == "chain")
        {
            string bas = _dir.File("src-chain-base.qcow2");
            Qemu("create", "-q", "-f", "qcow2", bas, "16M");
            Io(bas, RandomWrites(11, 16 << 20, 30));
            Qemu("create", "-q", "-f", "qcow2", "-b", bas, "-F", "qcow2", img, size);
            Io(img, RandomWrites(12, 24 << 20, 30));
            return img;
        }
        var create = new List<string> { "create", "-q", "-f", "qcow2" };
        foreach (var o in opts) { create.Add("-o"); create.Add(o); }
        create.AddRange([img, size]);
        Qemu([.. create]);
        Io(img, writes);
        if (kind == "zero-clusters") Io(img, ["write -z 0 4M", "write -z -u 8M 2M", "discard 12M 1M"]);
        if (kind == "compressed")
        {
            string c = _dir.File("src-compressed-c.qcow2");
            Qemu("convert", "-q", "-c", "-O", "qcow2", img, c);
            return c;
        }
        return img;
    }

    private static Task<int> Convert(string src, string dst, bool compress = false, string[]? options = null,
        string? backing = null, string? backingFormat = null, string? snapshot = null) =>
        ConvertCommand.RunAsync(new ConvertRequest(src, dst)
        {
            OutFormat = "qcow2",
            Compress = compress,
            Options = options ?? [],
            BackingFile = backing,
            BackingFormat = backingFormat,
            Snapshot = snapshot,
        }, CancellationToken.None);

    internal static JsonObject CheckJson(string image)
    {
        var r = QemuTools.QemuImg("check", "--output=json", image);
        Assert.True(r.ExitCode == 0, $"qemu-img check failed ({r.ExitCode}): {r.StdErr}{r.StdOut}");
        var json = JsonNode.Parse(r.StdOut)!.AsObject();
        Assert.Equal(0, (int)json["check-errors"]!);
        Assert.Null(json["leaks"]);
        Assert.Null(json["corruptions"]);
        return json;
    }

    private static JsonObject InfoJson(string image) =>
        JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", image).EnsureSuccess().StdOut)!.AsObject();

    private static void AssertIdentical(string a, string b, params string[] extra)
    {
        var r = QemuTools.QemuImg(["compare", .. extra, a, b]);
        Assert.True(r.ExitCode == 0, $"qemu-img compare: {r.StdOut}{r.StdErr}");
        Assert.Equal("Images are identical.", r.StdOut.Trim());
    }

    [QemuTheory]
    [MemberData(nameof(Sources))]
    public async Task Convert_to_qcow2_is_clean_identical_and_allocates_what_qemu_img_allocates(string kind)
    {
        string src = MakeSource(kind), ours = _dir.File("ours.qcow2"), theirs = _dir.File("theirs.qcow2");
        Assert.Equal(0, await Convert(src, ours));
        var check = CheckJson(ours);
        AssertIdentical(src, ours);
        Assert.False(File.Exists(ours + ".journal") && new FileInfo(ours + ".journal").Length > 64, "journal left with records");
        var header = InfoJson(ours);
        Assert.Equal(65536, (int)header["cluster-size"]!);
        Assert.Equal("1.1", (string)header["format-specific"]!["data"]!["compat"]!);
        Assert.False((bool)header["dirty-flag"]!);
        // Only data is allocated: what qemu-img convert allocates for the same source.
        Qemu("convert", "-O", "qcow2", src, theirs);
        Assert.Equal((int)CheckJson(theirs)["allocated-clusters"]!, (int)check["allocated-clusters"]!);
    }

    [QemuTheory]
    [MemberData(nameof(Sources))]
    public async Task Convert_compressed_is_clean_identical_and_compressed(string kind)
    {
        string src = MakeSource(kind), ours = _dir.File("ours-c.qcow2");
        Assert.Equal(0, await Convert(src, ours, compress: true));
        var check = CheckJson(ours);
        AssertIdentical(src, ours);
        Assert.True((int)check["compressed-clusters"]! > 0, check.ToJsonString());
        // Every data cluster but a short last one is compressed (patterned data always shrinks).
        int allocated = (int)check["allocated-clusters"]!, compressed = (int)check["compressed-clusters"]!;
        Assert.InRange(allocated - compressed, 0, kind == "unaligned-size" ? 1 : 0);
        var map = JsonNode.Parse(QemuTools.QemuImg("map", "--output=json", ours).EnsureSuccess().StdOut)!.AsArray();
        Assert.Contains(map, e => (bool)e!["data"]! && e["offset"] is null); // compressed runs have no plain host offset
    }

    public static TheoryData<string, string> TargetOptions => new()
    {
        { "cluster_size=4k", "" },
        { "cluster_size=512,refcount_bits=1", "" },
        { "cluster_size=2M", "" },
        { "refcount_bits=64", "" },
        { "extended_l2=on", "" },
        { "lazy_refcounts=on", "" },
        { "compression_type=zstd", "-c" },
        { "compression_type=zlib,cluster_size=4k", "-c" },
        { "extended_l2=on,cluster_size=32k", "-c" },
        { "refcount_bits=64", "-c" },
    };

    // Engine gaps found by these cases (see the convert branch's report); they run once the engine takes them.
    [QemuTheory]
    [InlineData("compat=0.10", "")]
    [InlineData("compat=0.10,cluster_size=32k", "-c")]
    [InlineData("refcount_bits=2", "-c")]
    [InlineData("refcount_bits=4", "-c")]
    [InlineData("refcount_bits=1", "-c")]
    public Task Target_options_the_engine_cannot_write_yet(string options, string flags) => Target_options_are_honoured(options, flags);

    [QemuTheory]
    [MemberData(nameof(TargetOptions))]
    public async Task Target_options_are_honoured(string options, string flags)
    {
        string src = MakeSource("plain"), ours = _dir.File("ours-o.qcow2");
        bool compress = flags == "-c";
        Assert.Equal(0, await Convert(src, ours, compress, [options]));
        var check = CheckJson(ours);
        AssertIdentical(src, ours);
        if (compress) Assert.True((int)check["compressed-clusters"]! > 0);
        var info = InfoJson(ours);
        var data = info["format-specific"]!["data"]!;
        foreach (var pair in options.Split(','))
        {
            var (key, value) = (pair.Split('=')[0], pair.Split('=')[1]);
            switch (key)
            {
                case "cluster_size": Assert.Equal(QemuSizeError.None, QemuSize.TryParse(value, out var cs)); Assert.Equal((long)cs, (long)info["cluster-size"]!); break;
                case "refcount_bits": Assert.Equal(int.Parse(value, System.Globalization.CultureInfo.InvariantCulture), (int)data["refcount-bits"]!); break;
                case "compat": Assert.Equal(value, (string)data["compat"]!); break;
                case "extended_l2": Assert.True((bool)data["extended-l2"]!); break;
                case "lazy_refcounts": Assert.True((bool)data["lazy-refcounts"]!); break;
                case "compression_type": Assert.Equal(value, (string)data["compression-type"]!); break;
            }
        }
    }

    [QemuTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task With_a_backing_file_only_the_top_image_is_copied_and_its_zeros_cover_the_backing(bool compress)
    {
        string bas = _dir.File("base.qcow2"), top = _dir.File("top.qcow2"), ours = _dir.File("ours-b.qcow2"), theirs = _dir.File("theirs-b.qcow2");
        Qemu("create", "-q", "-f", "qcow2", bas, "8M");
        Io(bas, ["write -P 1 0 8M"]);
        Qemu("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, "8M");
        // Data, stored zeros over backing data, zero data over backing data, an unaligned piece.
        Io(top, ["write -P 2 64k 128k", "write -z 1M 512k", "write -P 0 2M 64k", "write -P 3 3M 1000", "write -P 4 7M 1M"]);
        Assert.Equal(0, await Convert(top, ours, compress, backing: "base.qcow2", backingFormat: "qcow2"));
        var check = CheckJson(ours);
        AssertIdentical(top, ours);
        var info = InfoJson(ours);
        Assert.Equal("base.qcow2", (string)info["backing-filename"]!);
        Assert.Equal("qcow2", (string)info["backing-filename-format"]!);
        // What the top leaves to the backing file is not copied.
        var map = JsonNode.Parse(QemuTools.QemuImg("map", "--output=json", ours).EnsureSuccess().StdOut)!.AsArray();
        Assert.Contains(map, e => (int)e!["depth"]! == 1 && (long)e["start"]! == 0);
        Assert.True((int)check["allocated-clusters"]! <= 4 + 8 + 2 + 16, check.ToJsonString());
        if (compress) Assert.True((int)check["compressed-clusters"]! > 0);
        // qemu-img's own output over the same backing reads the same.
        Qemu(["convert", .. compress ? new[] { "-c" } : [], "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", top, theirs]);
        AssertIdentical(theirs, ours);
    }

    [QemuFact]
    public async Task A_snapshot_converts_to_qcow2()
    {
        string img = _dir.File("snap.qcow2"), ours = _dir.File("ours-s.qcow2"), theirs = _dir.File("theirs-s.raw");
        Qemu("create", "-q", "-f", "qcow2", img, "8M");
        Io(img, ["write -P 1 0 1M"]);
        Qemu("snapshot", "-c", "s1", img);
        Io(img, ["write -P 2 512k 1M"]);
        Assert.Equal(0, await Convert(img, ours, snapshot: "s1"));
        CheckJson(ours);
        Qemu("convert", "-l", "s1", "-O", "raw", img, theirs);
        AssertIdentical(theirs, ours, "-f", "raw", "-F", "qcow2");
    }

    [QemuFact]
    public void The_executable_converts_with_progress_and_replaces_an_existing_target()
    {
        string src = MakeSource("plain"), ours = _dir.File("exe.qcow2");
        File.WriteAllText(ours, "not an image");
        var r = QemuTools.Q2a("convert", "-p", "-c", "-O", "qcow2", "-o", "cluster_size=128k", "-o", "refcount_bits=8", src, ours).EnsureSuccess();
        var lines = r.StdOut.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("    (0.00/100%)", lines[0]);
        Assert.Equal("    (100.00/100%)", lines[^1]);
        var check = CheckJson(ours);
        Assert.True((int)check["compressed-clusters"]! > 0);
        AssertIdentical(src, ours);
        var info = InfoJson(ours);
        Assert.Equal(131072, (int)info["cluster-size"]!);
        Assert.Equal(8, (int)info["format-specific"]!["data"]!["refcount-bits"]!);
    }

    [QemuTheory]
    [InlineData(new[] { "-O", "qcow2", "-B", "base.qcow2" }, "q2a: Use of backing file requires explicit backing format")]
    [InlineData(new[] { "-O", "qcow2", "-o", "foo=1" }, "q2a: Invalid parameter 'foo'")]
    [InlineData(new[] { "-O", "qcow2", "-o", "extended_l2=maybe" }, "q2a: Parameter 'extended_l2' expects 'on' or 'off'")]
    [InlineData(new[] { "-O", "raw", "-c" }, "q2a: Compression not supported for this file format")]
    public void Bad_requests_fail_with_qemu_img_wording(string[] args, string message)
    {
        string src = _dir.File("e.qcow2");
        Qemu("create", "-q", "-f", "qcow2", src, "1M");
        var r = QemuTools.Q2a(["convert", .. args, src, _dir.File("e-out.qcow2")]);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal(message, r.StdErr.Trim());
    }

    [QemuTheory]
    [InlineData("cluster_size=3000", "Cluster size must be a power of two between 512 and 2048k")]
    [InlineData("refcount_bits=3", "Refcount width must be a power of two and may not exceed 64 bits")]
    [InlineData("compat=2", "Parameter 'version' does not accept value '2'")]
    [InlineData("compression_type=lz4", "Parameter 'compression-type' does not accept value 'lz4'")]
    [InlineData("preallocation=bogus", "Parameter 'preallocation' does not accept value 'bogus'")]
    [InlineData("data_file_raw=on", "data-file-raw requires data-file")]
    public void Invalid_target_options_name_the_target_like_qemu_img(string option, string message)
    {
        string src = _dir.File("e.qcow2"), dst = _dir.File("e-out.qcow2");
        Qemu("create", "-q", "-f", "qcow2", src, "1M");
        var r = QemuTools.Q2a("convert", "-O", "qcow2", "-o", option, src, dst);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"q2a: {dst}: error while converting qcow2: {message}", r.StdErr.Trim());
    }

    /// <summary>The -o parser is create's: its errors are qemu-img convert's, word for word (lines joined).</summary>
    [QemuTheory]
    [InlineData("foo=1")]
    [InlineData("extended_l2=maybe")]
    [InlineData("cluster_size=3x")]
    [InlineData("cluster_size=4k,,x")]
    [InlineData("refcount_bits=abc")]
    [InlineData("")]
    [InlineData(",a")]
    [InlineData("compat=2")]
    [InlineData("preallocation=bogus")]
    public void Option_errors_read_as_qemu_img_converts(string option)
    {
        string src = _dir.File("e.qcow2"), dst = _dir.File("e-out.qcow2");
        Qemu("create", "-q", "-f", "qcow2", src, "1M");
        var theirs = QemuTools.QemuImg("convert", "-O", "qcow2", "-o", option, src, dst);
        var ours = QemuTools.Q2a("convert", "-O", "qcow2", "-o", option, src, dst);
        Assert.Equal(1, theirs.ExitCode);
        Assert.Equal(1, ours.ExitCode);
        string expected = theirs.StdErr.Trim().ReplaceLineEndings(" ");
        Assert.StartsWith("qemu-img: ", expected, StringComparison.Ordinal);
        Assert.Equal("q2a: " + expected["qemu-img: ".Length..], ours.StdErr.Trim());
    }

    [QemuFact]
    public void O_help_lists_the_options_and_file_options_are_accepted()
    {
        string src = MakeSource("plain"), dst = _dir.File("h.qcow2");
        var help = QemuTools.Q2a("convert", "-O", "qcow2", "-o", "help", src, dst).EnsureSuccess();
        Assert.StartsWith("Supported options:\n  backing_file=<str>     - File name of a base image\n", help.StdOut, StringComparison.Ordinal);
        Assert.False(File.Exists(dst));
        // qemu-img accepts the host file's options for any format; so does q2a (and ignores them).
        QemuTools.Q2a("convert", "-O", "qcow2", "-o", "extent_size_hint=1M,nocow=on,size=1M", "-o", "cluster_size=32k", src, dst).EnsureSuccess();
        CheckJson(dst);
        AssertIdentical(src, dst);
        Assert.Equal(32768, (int)InfoJson(dst)["cluster-size"]!);
    }

    [QemuFact]
    public void Converting_onto_the_source_is_refused_and_leaves_it_intact()
    {
        string src = _dir.File("self.qcow2"), copy = _dir.File("self-copy.qcow2");
        Qemu("create", "-q", "-f", "qcow2", src, "1M");
        Io(src, ["write -P 3 0 64k"]);
        File.Copy(src, copy);
        var r = QemuTools.Q2a("convert", "-O", "qcow2", src, src);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("is the source image", r.StdErr, StringComparison.Ordinal);
        AssertIdentical(copy, src);
    }
}
