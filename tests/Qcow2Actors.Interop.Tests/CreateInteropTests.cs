using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a create</c> as a user runs it, beside <c>qemu-img create</c> with the same arguments:
/// the same Formatting line, an image qemu-img check finds clean, and the same
/// <c>qemu-img info --output=json</c> apart from names and allocated bytes.
/// </summary>
public sealed class CreateInteropTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _ours;
    private readonly string _theirs;

    public CreateInteropTests()
    {
        _ours = Directory.CreateDirectory(_dir.File("ours")).FullName;
        _theirs = Directory.CreateDirectory(_dir.File("theirs")).FullName;
        // A base image of each format in both directories, so relative backing names resolve alike.
        foreach (var d in new[] { _ours, _theirs })
        {
            QemuTools.QemuImg("create", "-q", "-f", "qcow2", Path.Combine(d, "base.qcow2"), "5M").EnsureSuccess();
            QemuTools.QemuImg("create", "-q", "-f", "raw", Path.Combine(d, "base.raw"), "3M").EnsureSuccess();
        }
    }

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string, string?, bool> Combinations() => new()
    {
        // arguments before the image name, size, whether qemu-img check can open the result
        { "-f qcow2", "1G", true },
        { "-f qcow2 -o cluster_size=4k,refcount_bits=8", "1G", true },
        { "-f qcow2 -o compat=0.10", "64M", true },
        { "-f qcow2 -o compat=v2,cluster_size=512", "8M", true },
        { "-f qcow2 -o compat=1.1,extended_l2=on,cluster_size=32k", "1G", true },
        { "-f qcow2 -o compat=v3,lazy_refcounts=on", "1G", true },
        { "-f qcow2 -o compression_type=zstd", "1G", true },
        { "-f qcow2 -o refcount_bits=1", "100M", true },
        { "-f qcow2 -o refcount_bits=64,cluster_size=2M", "10G", true },
        { "-f qcow2 -o preallocation=metadata", "20M", true },
        { "-f qcow2 -o extended_l2=on,preallocation=metadata", "20M", true },
        { "-f qcow2 -o preallocation=off", "1M", true },
        // Absolute data file names: qemu resolves a relative one against its working directory,
        // the engine against the image's directory (see the engine's ImageCreator).
        { "-f qcow2 -o data_file={dir}/data.raw,data_file_raw=on", "10M", true },
        { "-f qcow2 -o data_file={dir}/data.raw", "10M", true },
        { "-f qcow2 -o data_file={dir}/data.raw,data_file_raw=on,preallocation=metadata", "10M", true },
        { "-f qcow2 -b base.qcow2 -F qcow2", null, true },
        { "-f qcow2 -b base.raw -F raw", null, true },
        { "-f qcow2 -b base.qcow2 -F qcow2", "16M", true },
        { "-f qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2", null, true },
        { "-f qcow2 -b base.qcow2 -F qcow2 -o extended_l2=on,preallocation=metadata", null, true },
        { "-f qcow2 -u -b missing.qcow2 -F qcow2", "4M", false },
        { "-f qcow2 -o cluster_size=4k -o lazy_refcounts=on -o cluster_size=8k", "1M", true },
        { "-f qcow2 -o lazy_refcounts,extended_l2=yes", "1M", true },
        { "-f qcow2", "1.5M", true },
        { "-f qcow2", "0", true },
        { "-f raw", "100M", true },
        { "-f raw -o preallocation=falloc", "1M", true },
        // The host file's options: accepted for any format, printed last (q2a ignores them).
        { "-f qcow2 -o extent_size_hint=1M,nocow=on", "1M", true },
        { "-f qcow2 -o nonocow,cluster_size=4k", "1M", true },
        { "-f raw -o nocow=on,extent_size_hint=0", "1M", true },
        { "", "64k", true },
    };

    [QemuTheory]
    [MemberData(nameof(Combinations))]
    public void Create_matches_qemu_img_line_for_line_and_image_for_image(string options, string? size, bool checkable)
    {
        string[] Args(string dir) => options.Replace("{dir}", dir, StringComparison.Ordinal).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var theirs = QemuTools.QemuImg(["create", .. Args(_theirs), Path.Combine(_theirs, "x.img"), .. Size(size)]).EnsureSuccess();
        var ours = QemuTools.Q2a(["create", .. Args(_ours), Path.Combine(_ours, "x.img"), .. Size(size)]).EnsureSuccess();
        Assert.Equal(theirs.StdOut.Replace(_theirs, _ours, StringComparison.Ordinal), ours.StdOut);
        Assert.Equal("", ours.StdErr);

        if (checkable && options.Contains("-f qcow2", StringComparison.Ordinal))
        {
            var check = QemuTools.QemuImg("check", Path.Combine(_ours, "x.img"));
            Assert.True(check.ExitCode == 0, check.StdOut + check.StdErr);
            Assert.Contains("No errors were found on the image.", check.StdOut, StringComparison.Ordinal);
        }
        Assert.Equal(Info(_theirs), Info(_ours));
    }

    private static string[] Size(string? size) => size is null ? [] : [size];

    // qemu-img info without what legitimately differs: the directories in the names, and the
    // bytes the host file system allocated (which depend on where each tool places tables).
    private static string Info(string dir)
    {
        var info = JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", Path.Combine(dir, "x.img")).EnsureSuccess().StdOut)!.AsObject();
        info.Remove("filename");
        info.Remove("actual-size");
        info.Remove("full-backing-filename");
        return info.ToJsonString().Replace(dir, "DIR", StringComparison.Ordinal);
    }

    [QemuFact]
    public void Raw_images_are_sparse()
    {
        string img = _dir.File("sparse.raw");
        QemuTools.Q2a("create", "-q", "-f", "raw", img, "1G").EnsureSuccess();
        Assert.Equal(1L << 30, new FileInfo(img).Length);
        var info = JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut)!;
        Assert.True(info["actual-size"]!.GetValue<long>() < 1 << 20);
    }

    [QemuFact]
    public void Quiet_prints_nothing()
    {
        var r = QemuTools.Q2a("create", "-q", "-f", "qcow2", _dir.File("q.qcow2"), "1M").EnsureSuccess();
        Assert.Equal("", r.StdOut + r.StdErr);
    }

    [QemuFact]
    public void An_existing_file_is_overwritten_like_qemu_img_does()
    {
        string img = _dir.File("over.qcow2");
        File.WriteAllText(img, "not an image");
        QemuTools.Q2a("create", "-q", "-f", "qcow2", img, "2M").EnsureSuccess();
        var info = JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut)!;
        Assert.Equal(2L << 20, info["virtual-size"]!.GetValue<long>());
    }

    [QemuFact]
    public void A_failed_create_leaves_an_existing_image_untouched()
    {
        string img = _dir.File("keep.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, "3M").EnsureSuccess();
        byte[] before = File.ReadAllBytes(img);
        var r = QemuTools.Q2a("create", "-f", "qcow2", "-o", "refcount_bits=3", img, "1M");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal($"q2a: {img}: Refcount width must be a power of two and may not exceed 64 bits", r.StdErr.Trim());
        Assert.Equal(before, File.ReadAllBytes(img));
        Assert.Empty(Directory.GetFiles(_dir.Path, "*.tmp"));
    }

    [QemuFact]
    public void An_existing_data_file_is_emptied_like_qemu_img_does()
    {
        string img = _dir.File("d.qcow2"), data = _dir.File("d.raw");
        File.WriteAllBytes(data, Enumerable.Repeat((byte)0x55, 8192).ToArray());
        QemuTools.Q2a("create", "-q", "-f", "qcow2", "-o", $"data_file={data},data_file_raw=on", img, "1M").EnsureSuccess();
        Assert.Equal(1L << 20, new FileInfo(data).Length);
        QemuTools.QemuIo("-r", "-c", "read -P 0 0 8k", img).EnsureSuccess();
    }

    [QemuTheory]
    [InlineData("-o foo=bar", "1M", "q2a: {img}: Invalid parameter 'foo'")]
    [InlineData("", "1Q", "q2a: Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")]
    [InlineData("", "10E", "q2a: Invalid image size specified. Must be between 0 and 9223372036854775807.")]
    [InlineData("", null, "q2a: {img}: Image creation needs a size parameter")]
    [InlineData("-b base.qcow2", null, "q2a: {img}: Backing file specified without backing format")]
    [InlineData("-F qcow2", "1M", "q2a: {img}: Backing format cannot be used without backing file")]
    [InlineData("-b nope.qcow2 -F qcow2", null, "q2a: {img}: Could not open '{dir}/nope.qcow2': No such file or directory. Could not open backing image.")]
    [InlineData("-u -b base.qcow2 -F qcow2", null, "q2a: {img}: Image creation needs a size parameter")]
    [InlineData("-o cluster_size=1000", "1M", "q2a: {img}: Cluster size must be a power of two between 512 and 2048k")]
    [InlineData("-o compat=0.10,lazy_refcounts=on", "1M", "q2a: {img}: Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")]
    [InlineData("-o size=1M", "2M", "q2a: {img}: The image size must be specified only once")]
    [InlineData("-o cluster_size=4k,", "1M", "q2a: Invalid option list: cluster_size=4k,")]
    public void Errors_are_one_line_with_exit_1_and_no_file(string options, string? size, string expected)
    {
        string img = Path.Combine(_ours, "err.qcow2");
        var args = options.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var r = QemuTools.Q2a(["create", "-f", "qcow2", .. args, img, .. Size(size)]);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal(expected.Replace("{img}", img, StringComparison.Ordinal).Replace("{dir}", _ours, StringComparison.Ordinal), r.StdErr.Trim());
        Assert.False(File.Exists(img));
    }

    [QemuFact]
    public void O_help_lists_the_supported_options()
    {
        var r = QemuTools.Q2a("create", "-f", "qcow2", "-o", "help", _dir.File("h.qcow2"), "1M").EnsureSuccess();
        Assert.StartsWith("Supported options:\n  backing_file=<str>     - File name of a base image\n", r.StdOut, StringComparison.Ordinal);
        Assert.False(File.Exists(_dir.File("h.qcow2")));
    }
}
