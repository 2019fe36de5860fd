using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a serve -A</c> and <c>-B NAME</c> against <c>qemu-nbd -A</c> and <c>-B NAME</c> on the same image:
/// libnbd's nbdinfo must list the same metadata contexts and map each one the same.
/// </summary>
public sealed class ServeMetaContextInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// top (12M) over mid (8M, qcow2) over base (4M, raw): data and zero clusters at each level, and
    /// ranges past each shorter backing file's end, where QEMU counts the zeroes as that file's.
    /// </summary>
    private string Chain()
    {
        string bas = _dir.File("base.raw"), mid = _dir.File("mid.qcow2"), top = _dir.File("top.qcow2");
        Qemu("create", "-q", "-f", "raw", bas, "4M");
        Io(bas, ["write -P 1 1M 64k"], "raw");
        Qemu("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid, "8M");
        Io(mid, ["write -P 2 2M 128k", "write -P 3 5M 64k", "write -z 6M 64k"]);
        Qemu("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top, "12M");
        Io(top, ["write -P 4 32k 64k", "write -z 3M 64k", "write -P 5 5M 4k", "write -P 6 10M 64k"]);
        return top;
    }

    private static string Map(string uri, string? context = null) =>
        QemuTools.Run("nbdinfo", context is null ? ["--map", uri] : ["--map=" + context, uri]).EnsureSuccess().StdOut;

    /// <summary>nbdinfo --map's lines as (offset, length, value).</summary>
    private static List<(long Offset, long Length, uint Value)> Runs(string map) =>
        map.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(f => (long.Parse(f[0], System.Globalization.CultureInfo.InvariantCulture), long.Parse(f[1], System.Globalization.CultureInfo.InvariantCulture),
                uint.Parse(f[2], System.Globalization.CultureInfo.InvariantCulture)))
            .ToList();

    /// <summary>The "contexts:" block of nbdinfo --list: the names LIST_META_CONTEXT gave, in order.</summary>
    private static List<string> Contexts(string uri)
    {
        var lines = QemuTools.Run("nbdinfo", "--list", uri).EnsureSuccess().StdOut.Split('\n');
        return lines.SkipWhile(l => l.Trim() != "contexts:").Skip(1).TakeWhile(l => l.StartsWith("\t\t", StringComparison.Ordinal))
            .Select(l => l.Trim()).ToList();
    }

    [ServeFact]
    public async Task Allocation_depth_and_base_allocation_maps_match_qemu_nbd_over_a_three_level_chain()
    {
        var top = Chain();
        string qemuMap, qemuDepth;
        List<string> qemuContexts;
        using (var qemu = QemuNbdProcess.Start(top, _dir, "-r", "-A"))
        {
            qemuDepth = Map(qemu.Uri, "qemu:allocation-depth");
            qemuMap = Map(qemu.Uri);
            qemuContexts = Contexts(qemu.Uri);
        }
        // The oracle saw what this test means to check: every depth down to the raw base (which allocates everything).
        foreach (var word in new[] { "local", "backing depth 2", "backing depth 3" }) Assert.Contains(word, qemuDepth);

        using var serve = await ServeProcess.StartAsync(1, "-r", "-A", "--socket", _dir.File("q2a.sock"), top);
        Assert.Equal(qemuDepth, Map(serve.Uri, "qemu:allocation-depth"));
        Assert.Equal(qemuMap, Map(serve.Uri));
        Assert.Equal(qemuContexts, Contexts(serve.Uri));
        Assert.Equal(["base:allocation", "qemu:allocation-depth"], Contexts(serve.Uri));
    }

    [ServeFact]
    public async Task Allocation_depth_of_a_writable_export_follows_writes_through_nbd()
    {
        var top = Chain();
        using var serve = await ServeProcess.StartAsync(1, "--allocation-depth", "--socket", _dir.File("q2a.sock"), top);
        const long M = 1 << 20;
        // 8M..10M: past mid's end, so mid's (depth 2) until the write below lands in top (depth 1).
        Assert.Contains((8 * M, 2 * M, 2u), Runs(Map(serve.Uri, "qemu:allocation-depth")));
        QemuTools.QemuIo("-f", "raw", "-c", "write -P 7 8M 64k", serve.Uri).EnsureSuccess();
        var after = Runs(Map(serve.Uri, "qemu:allocation-depth"));
        Assert.Contains((8 * M, 65536L, 1u), after);
        Assert.Contains((8 * M + 65536, 2 * M - 65536, 2u), after);
        Assert.Equal(0, serve.Stop());
    }

    [ServeFact]
    public async Task Dirty_bitmap_maps_and_context_list_match_qemu_nbd_for_bitmaps_qemu_kept()
    {
        string img = _dir.File("bm.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "16M");
        Io(img, ["write -P 1 0 4M"]);
        Qemu("bitmap", "--add", "-g", "131072", img, "b0");
        Io(img, ["write -P 2 1000 3000", "write -P 3 3M 300k", "write -z 8M 64k", "discard 2M 64k"]);
        Qemu("bitmap", "--add", img, "b1");
        Io(img, ["write -P 4 12M 4k", "write -P 5 16775168 1024"]);

        var maps = new List<string>();
        List<string> qemuContexts;
        using (var qemu = QemuNbdProcess.Start(img, _dir, "-r", "-A", "-B", "b0", "-B", "b1"))
        {
            maps.Add(Map(qemu.Uri, "qemu:dirty-bitmap:b0"));
            maps.Add(Map(qemu.Uri, "qemu:dirty-bitmap:b1"));
            qemuContexts = Contexts(qemu.Uri);
        }
        Assert.Contains("dirty", maps[0]);
        Assert.Contains("dirty", maps[1]);

        using var serve = await ServeProcess.StartAsync(1, "-r", "-A", "-B", "b0", "-B", "b1", "--socket", _dir.File("q2a.sock"), img);
        Assert.Equal(maps[0], Map(serve.Uri, "qemu:dirty-bitmap:b0"));
        Assert.Equal(maps[1], Map(serve.Uri, "qemu:dirty-bitmap:b1"));
        // qemu-nbd lists the -B bitmaps last given first.
        Assert.Equal(qemuContexts, Contexts(serve.Uri));
        Assert.Equal(["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b0"], qemuContexts);
    }

    [ServeFact]
    public void A_missing_bitmap_is_qemu_nbd_s_error_line_and_exit_1()
    {
        string img = _dir.File("nob.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "1M");
        var qemu = QemuTools.Run("qemu-nbd", "-r", "-B", "nope", "-k", _dir.File("qemu.sock"), img);
        Assert.Equal(1, qemu.ExitCode);
        var q2a = QemuTools.Q2a("serve", "-r", "-B", "nope", "--socket", _dir.File("q2a.sock"), img);
        Assert.Equal(1, q2a.ExitCode);
        // Same words after the program's name: "qemu-nbd: Bitmap 'nope' is not found".
        Assert.Equal(qemu.StdErr.Trim()["qemu-nbd: ".Length..], q2a.StdErr.Trim()[(q2a.StdErr.IndexOf(": ", StringComparison.Ordinal) + 2)..]);
    }
}
