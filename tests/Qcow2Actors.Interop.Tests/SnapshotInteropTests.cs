using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a snapshot -l|-c|-a|-d</c> judged by QEMU: after every q2a edit <c>qemu-img check</c> finds no
/// error and no leak, <c>qemu-img snapshot -l</c> lists what q2a says, <c>qemu-img convert -l</c> reads
/// the snapshot's data, and snapshots made by either tool are applied and deleted by the other.
/// </summary>
public sealed class SnapshotInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string NewImage(string options, string size = "16M")
    {
        string img = _dir.File($"img{Guid.NewGuid():N}.qcow2");
        string[] opts = options.Length == 0 ? [] : ["-o", options];
        QemuTools.QemuImg(["create", "-q", "-f", "qcow2", .. opts, img, size]).EnsureSuccess();
        return img;
    }

    private static void QemuIo(string img, params string[] commands) =>
        QemuTools.QemuIo([.. commands.SelectMany(c => new[] { "-c", c }), img]).EnsureSuccess();

    private byte[] Content(string img, string? snapshot = null)
    {
        string raw = _dir.File($"raw{Guid.NewGuid():N}");
        string[] l = snapshot is null ? [] : ["-l", snapshot];
        QemuTools.QemuImg(["convert", .. l, "-O", "raw", img, raw]).EnsureSuccess();
        var bytes = File.ReadAllBytes(raw);
        File.Delete(raw);
        return bytes;
    }

    private static void AssertClean(string img)
    {
        var check = QemuTools.QemuImg("check", "--output=json", img);
        Assert.True(check.ExitCode == 0, $"qemu-img check ({check.ExitCode}): {check.StdOut}{check.StdErr}");
        var json = JsonNode.Parse(check.StdOut)!.AsObject();
        Assert.Equal(0, (int)json["check-errors"]!);
        Assert.Null(json["leaks"]);
        Assert.Null(json["corruptions"]);
    }

    private static string[] SnapshotNames(string img)
    {
        var info = JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut)!.AsObject();
        return info["snapshots"] is JsonArray a ? [.. a.Select(s => (string)s!["name"]!)] : [];
    }

    private static long VirtualSize(string img) =>
        (long)JsonNode.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut)!["virtual-size"]!;

    private static void Q2a(params string[] args) => QemuTools.Q2a(args).EnsureSuccess();

    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    // Data, a partial cluster, compressed clusters, zero clusters (plain and over data), a discard.
    private static readonly string[] Patterns =
    [
        "write -P 0x11 0 1M", "write -P 0x12 1M 4k", "write -c -P 0x13 4M 64k", "write -c -P 0x14 4160k 64k",
        "write -z 6M 128k", "write -P 0x15 7M 128k", "write -z 7M 64k", "write -P 0x16 15M 1M", "discard 15M 64k",
    ];

    private static readonly string[] Changes =
    [
        "write -P 0x21 512k 1M", "write -P 0x22 4M 4k", "write -z 0 64k", "write -P 0x23 6M 64k", "discard 7M 128k", "write -c -P 0x24 12M 64k",
    ];

    [QemuTheory]
    [InlineData("cluster_size=65536")]
    [InlineData("cluster_size=4096")]
    [InlineData("refcount_bits=4")]
    [InlineData("refcount_bits=64,cluster_size=4096")]
    [InlineData("compat=0.10")]
    [InlineData("compat=0.10,cluster_size=4096")]
    [InlineData("extended_l2=on")]
    [InlineData("extended_l2=on,cluster_size=16384,refcount_bits=8")]
    [InlineData("compression_type=zstd,lazy_refcounts=on")]
    public void A_q2a_snapshot_keeps_its_data_through_changes_apply_and_delete_with_qemu_img_check_clean(string options)
    {
        var img = NewImage(options);
        QemuIo(img, Patterns);
        var atSnapshot = Content(img);

        Q2a("snapshot", "-c", "s1", img);
        AssertClean(img);
        Assert.Equal(["s1"], SnapshotNames(img));
        Assert.Equal(atSnapshot, Content(img, "s1"));

        QemuIo(img, Changes);
        AssertClean(img);
        var changed = Content(img);
        Assert.NotEqual(atSnapshot, changed);
        Assert.Equal(atSnapshot, Content(img, "s1"));

        Q2a("snapshot", "-a", "s1", img);
        AssertClean(img);
        Assert.Equal(atSnapshot, Content(img));
        // COPIED must be right after apply: QEMU writing over the restored disk keeps the snapshot intact.
        QemuIo(img, "write -P 0x31 0 2M", "write -P 0x32 4M 64k");
        AssertClean(img);
        Assert.Equal(atSnapshot, Content(img, "s1"));
        var afterWrites = Content(img);

        Q2a("snapshot", "-d", "s1", img);
        AssertClean(img);
        Assert.Empty(SnapshotNames(img));
        Assert.Equal(afterWrites, Content(img));
        // Clusters the snapshot shared are owned again: an in-place write must not trip check.
        QemuIo(img, "write -P 0x41 1M 64k");
        AssertClean(img);
    }

    [QemuTheory]
    [InlineData("")]
    [InlineData("compat=0.10")]
    [InlineData("extended_l2=on,refcount_bits=4")]
    public void Snapshots_made_by_qemu_img_are_applied_and_deleted_by_q2a(string options)
    {
        var img = NewImage(options);
        QemuIo(img, Patterns);
        var first = Content(img);
        QemuTools.QemuImg("snapshot", "-c", "first", img).EnsureSuccess();
        QemuIo(img, Changes);
        var second = Content(img);
        QemuTools.QemuImg("snapshot", "-c", "second", img).EnsureSuccess();
        QemuIo(img, "write -P 0x51 0 8M");

        Q2a("snapshot", "-a", "first", img);
        AssertClean(img);
        Assert.Equal(first, Content(img));
        Q2a("snapshot", "-a", "2", img); // by ID, as qemu-img looks it up
        AssertClean(img);
        Assert.Equal(second, Content(img));
        Q2a("snapshot", "-d", "first", img);
        AssertClean(img);
        Assert.Equal(["second"], SnapshotNames(img));
        Assert.Equal(second, Content(img, "second"));
        Q2a("snapshot", "-d", "second", img);
        AssertClean(img);
        Assert.Empty(SnapshotNames(img));
        Assert.Equal(second, Content(img));
    }

    [QemuTheory]
    [InlineData("")]
    [InlineData("cluster_size=4096,refcount_bits=8")]
    public void Snapshots_made_by_q2a_are_applied_and_deleted_by_qemu_img(string options)
    {
        var img = NewImage(options);
        QemuIo(img, Patterns);
        var first = Content(img);
        Q2a("snapshot", "-c", "first", img);
        QemuIo(img, Changes);
        var second = Content(img);
        Q2a("snapshot", "-c", "second", img);
        QemuIo(img, "write -P 0x61 0 8M");
        Assert.Contains("2         second", QemuTools.QemuImg("snapshot", "-l", img).EnsureSuccess().StdOut, StringComparison.Ordinal);

        QemuTools.QemuImg("snapshot", "-a", "first", img).EnsureSuccess();
        AssertClean(img);
        Assert.Equal(first, Content(img));
        QemuTools.QemuImg("snapshot", "-d", "first", img).EnsureSuccess();
        AssertClean(img);
        QemuTools.QemuImg("snapshot", "-a", "second", img).EnsureSuccess();
        AssertClean(img);
        Assert.Equal(second, Content(img));
        QemuTools.QemuImg("snapshot", "-d", "second", img).EnsureSuccess();
        AssertClean(img);
        Assert.Empty(SnapshotNames(img));
    }

    [QemuFact]
    public void Snapshot_list_equals_qemu_img_snapshot_list_for_snapshots_of_both_tools()
    {
        var img = NewImage("");
        QemuIo(img, "write -P 1 0 64k");
        Assert.Equal("", QemuTools.Q2a("snapshot", "-l", img).EnsureSuccess().StdOut);
        QemuTools.QemuImg("snapshot", "-c", "by-qemu", img).EnsureSuccess();
        Q2a("snapshot", "-c", "by-q2a", img);
        Q2a("snapshot", "-c", "a-name-longer-than-the-sixteen-column-tag", img);
        QemuTools.QemuImg("snapshot", "-c", "by-q2a", img).EnsureSuccess(); // duplicate names are allowed
        var expected = QemuTools.QemuImg("snapshot", "-l", img).EnsureSuccess().StdOut;
        Assert.Equal(expected, QemuTools.Q2a("snapshot", "-l", img).EnsureSuccess().StdOut);
        Assert.Equal(expected, QemuTools.Q2a("snapshot", img).EnsureSuccess().StdOut); // no action lists
        Assert.Contains("4         by-q2a", expected, StringComparison.Ordinal);
        // -d takes the first snapshot with that name, as qemu-img does.
        Q2a("snapshot", "-d", "by-q2a", img);
        Assert.Equal(["by-qemu", "a-name-longer-than-the-sixteen-column-tag", "by-q2a"], SnapshotNames(img));
        AssertClean(img);
    }

    [QemuFact]
    public void Applying_a_snapshot_restores_the_virtual_size_it_was_taken_at()
    {
        var img = NewImage("", "8M");
        QemuIo(img, "write -P 0x71 0 8M");
        var small = Content(img);
        Q2a("snapshot", "-c", "small", img);
        QemuTools.QemuImg("resize", "-q", img, "1G").EnsureSuccess();
        QemuIo(img, "write -P 0x72 600M 1M");

        Q2a("snapshot", "-a", "small", img);
        AssertClean(img);
        Assert.Equal(8L << 20, VirtualSize(img));
        Assert.Equal(small, Content(img));
        QemuTools.QemuImg("resize", "-q", img, "1G").EnsureSuccess();
        QemuTools.QemuImg("snapshot", "-c", "big", img).EnsureSuccess();
        QemuTools.QemuImg("resize", "-q", "--shrink", img, "8M").EnsureSuccess();
        Q2a("snapshot", "-a", "big", img);
        AssertClean(img);
        Assert.Equal(1L << 30, VirtualSize(img));
    }

    [QemuFact]
    public void A_snapshot_that_would_overflow_two_bit_refcounts_is_refused_without_touching_the_image()
    {
        var img = NewImage("refcount_bits=2");
        QemuIo(img, "write -P 1 0 256k", "write -c -P 2 1M 64k");
        Q2a("snapshot", "-c", "s1", img);
        Q2a("snapshot", "-c", "s2", img); // data refcount now 3, the 2-bit maximum: allowed, as in QEMU
        AssertClean(img);
        var before = Hash(img);

        var r = QemuTools.Q2a("snapshot", "-c", "s3", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("Could not create snapshot 's3'", r.StdErr, StringComparison.Ordinal);
        Assert.Contains("would exceed 3", r.StdErr, StringComparison.Ordinal);
        Assert.Equal(before, Hash(img));

        // Applying adds the snapshot's paths before it drops the disk's: over the maximum too.
        r = QemuTools.Q2a("snapshot", "-a", "s1", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal(before, Hash(img));
        AssertClean(img);
    }

    [QemuFact]
    public void Compressed_clusters_packed_into_one_host_cluster_that_would_overflow_are_refused_where_qemu_img_leaks()
    {
        var img = NewImage("refcount_bits=2");
        // Two compressed clusters share host cluster: refcount 2; a snapshot adds 2 more paths.
        QemuIo(img, "write -c -P 0x13 4M 64k", "write -c -P 0x14 4160k 64k");
        var copy = _dir.File("qemu.qcow2");
        File.Copy(img, copy);
        var before = Hash(img);

        var r = QemuTools.Q2a("snapshot", "-c", "s1", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("would exceed 3", r.StdErr, StringComparison.Ordinal);
        Assert.Equal(before, Hash(img));
        AssertClean(img);
        // qemu-img refuses too, but only after raising some refcounts: its image leaks.
        Assert.NotEqual(0, QemuTools.QemuImg("snapshot", "-c", "s1", copy).ExitCode);
        Assert.NotEqual(0, QemuTools.QemuImg("check", copy).ExitCode);
    }

    [QemuFact]
    public void One_bit_refcounts_cannot_hold_a_snapshot_and_the_image_is_untouched()
    {
        var img = NewImage("refcount_bits=1");
        QemuIo(img, "write -P 1 0 64k");
        var before = Hash(img);
        var r = QemuTools.Q2a("snapshot", "-c", "s1", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("1-bit refcounts", r.StdErr, StringComparison.Ordinal);
        Assert.Equal(before, Hash(img));
    }

    [QemuTheory]
    [InlineData(0, "q2a recover")]
    [InlineData(1, "q2a check -r all")]
    public void A_dirty_or_corrupt_image_is_refused_with_the_command_that_fixes_it(int bit, string fix)
    {
        var img = NewImage("");
        QemuIo(img, "write -P 1 0 64k");
        using (var f = File.OpenWrite(img))
        {
            f.Position = 79;
            f.WriteByte((byte)(1 << bit));
        }
        var before = Hash(img);
        foreach (var args in new[] { new[] { "-c", "s1" }, ["-a", "s1"], ["-d", "s1"] })
        {
            var r = QemuTools.Q2a(["snapshot", .. args, img]);
            Assert.Equal(1, r.ExitCode);
            Assert.Contains(fix, r.StdErr, StringComparison.Ordinal);
        }
        Assert.Equal(before, Hash(img));
        // Listing only reads, as qemu-img snapshot -l does.
        Assert.Equal(0, QemuTools.Q2a("snapshot", "-l", img).ExitCode);
    }

    [QemuFact]
    public void Unknown_snapshots_and_mixed_actions_are_refused_with_qemu_img_messages()
    {
        var img = NewImage("");
        Q2a("snapshot", "-c", "s1", img);
        var before = Hash(img);
        var r = QemuTools.Q2a("snapshot", "-d", "1", img); // -d looks up names only
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("q2a: Could not delete snapshot '1': snapshot not found", r.StdErr.Trim());
        r = QemuTools.Q2a("snapshot", "-a", "nope", img);
        Assert.Equal("q2a: Could not apply snapshot 'nope': Failed to load snapshot: No such file or directory", r.StdErr.Trim());
        r = QemuTools.Q2a("snapshot", "-l", "-c", "x", img);
        Assert.Equal("q2a: Cannot mix '-l', '-a', '-c', '-d'", r.StdErr.Trim());
        Assert.Equal(before, Hash(img));
    }

    [QemuFact]
    public void An_image_another_process_has_open_for_writing_is_not_edited()
    {
        var img = NewImage("");
        var before = Hash(img);
        // The write lock a q2a engine (or qemu-nbd) holds on its image; the edit needs the write lock itself.
        using (Engine.Device.ImageLock.Acquire(img, Engine.Device.LockMode.Writer))
        {
            var r = QemuTools.Q2a("snapshot", "-c", "s1", img);
            Assert.Equal(1, r.ExitCode);
            Assert.Equal($"q2a: Could not open '{img}': Failed to get \"write\" lock: is another process using the image?", r.StdErr.Trim());
            // Listing takes the shared read lock, which a writer does not share; -U lists anyway.
            Assert.Contains("Failed to get shared \"write\" lock", QemuTools.Q2a("snapshot", "-l", img).StdErr, StringComparison.Ordinal);
            Assert.Equal(0, QemuTools.Q2a("snapshot", "-l", "-U", img).ExitCode);
        }
        Assert.Equal(before, Hash(img));
        Q2a("snapshot", "-c", "s1", img);
        AssertClean(img);
    }
}
