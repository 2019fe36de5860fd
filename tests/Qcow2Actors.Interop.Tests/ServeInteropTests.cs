using System.Net.Sockets;
using System.Text.Json;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>A fact that needs qemu-img, qemu-io and libnbd's tools; skips with the reason when they are absent outside CI.</summary>
public sealed class ServeFactAttribute : FactAttribute
{
    public ServeFactAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io", "nbdinfo"); }
}

/// <summary>A theory that needs qemu-img, qemu-io and libnbd's tools.</summary>
public sealed class ServeTheoryAttribute : TheoryAttribute
{
    public ServeTheoryAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io", "nbdinfo"); }
}

/// <summary>
/// <c>q2a serve</c> as a user runs it, out of process, against QEMU's and libnbd's clients:
/// what they read over NBD must be what qemu-img reads from the file.
/// </summary>
public sealed class ServeInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Images built by qemu-io, each exercising a different way clusters are stored.</summary>
    private string Image(string kind)
    {
        string img = _dir.File(kind + ".qcow2");
        switch (kind)
        {
            case "plain":
                Qemu("create", "-q", "-f", "qcow2", img, "16M");
                Io(img, ["write -P 0xab 1M 200k", "write -z 4M 128k", "write -P 0x11 15M 1M", "write -P 3 7M 512"]);
                break;
            case "chain":
                string bas = _dir.File("base.qcow2");
                Qemu("create", "-q", "-f", "qcow2", bas, "8M");
                Io(bas, ["write -P 1 0 1M", "write -P 2 3M 64k", "write -z 5M 64k"]);
                Qemu("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", img, "12M");
                Io(img, ["write -P 3 32k 64k", "write -z 512k 64k", "write -P 4 9M 4k", "discard 3M 64k"]);
                break;
            case "compressed":
                string raw = _dir.File("c.raw");
                File.WriteAllBytes(raw, [.. Enumerable.Range(0, 3 << 20).Select(i => (byte)(i / 4096 % 7 == 0 ? 0 : i % 251))]);
                Qemu("convert", "-q", "-f", "raw", "-c", "-O", "qcow2", raw, img);
                break;
            case "v2":
                Qemu("create", "-q", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", img, "5M");
                Io(img, ["write -P 9 4k 12k", "write -P 8 2M 1M"]);
                break;
            case "subclusters":
                Qemu("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", img, "8M");
                Io(img, ["write -P 5 4k 4k", "write -P 6 260k 8k", "write -z 1M 128k", "write -P 7 2M 256k", "write -z 2M 4k"]);
                break;
            default: throw new ArgumentOutOfRangeException(nameof(kind));
        }
        return img;
    }

    [ServeTheory]
    [InlineData("plain")]
    [InlineData("chain")]
    [InlineData("compressed")]
    [InlineData("v2")]
    [InlineData("subclusters")]
    public async Task Clients_read_over_nbd_what_qemu_img_reads_from_the_file(string kind)
    {
        var img = Image(kind);
        using var server = await ServeProcess.StartAsync(1, "--port", "0", "--read-only", img);
        Assert.Equal($"nbd://127.0.0.1:", server.Uri[..16]);
        Assert.EndsWith($"/{kind}.qcow2", server.Uri);

        string expected = _dir.File("expected.raw"), actual = _dir.File("actual.raw");
        Qemu("convert", "-O", "raw", img, expected);
        Qemu("convert", "-f", "raw", "-O", "raw", server.Uri, actual);
        AssertSameBytes(expected, actual);

        Assert.Equal(QemuAllocation(img), NbdAllocation(server.Uri));
        Assert.Equal(0, server.Stop());
    }

    [ServeFact]
    public async Task Allocation_matches_qemu_nbd_for_the_same_image()
    {
        var img = Image("chain");
        using var server = await ServeProcess.StartAsync(1, "--port", "0", "--read-only", img);
        var theirs = QemuTools.Run("nbdinfo", "--map", "--json", "--", "[", "qemu-nbd", "-r", "-f", "qcow2", img, "]").EnsureSuccess().StdOut;
        Assert.Equal(Merge(ParseNbdinfo(theirs)), NbdAllocation(server.Uri));
        Assert.Equal(0, server.Stop());
    }

    [ServeFact]
    public async Task Several_images_are_several_exports_named_by_file()
    {
        string a = Image("plain"), b = Image("v2");
        using var server = await ServeProcess.StartAsync(2, "--port", "0", "--read-only", a, b);
        Assert.EndsWith("/plain.qcow2", server.Uris[0]);
        Assert.EndsWith("/v2.qcow2", server.Uris[1]);

        var list = JsonDocument.Parse(QemuTools.Run("nbdinfo", "--list", "--json", server.Uri).EnsureSuccess().StdOut);
        var exports = list.RootElement.GetProperty("exports").EnumerateArray()
            .ToDictionary(e => e.GetProperty("export-name").GetString()!, e => e.GetProperty("export-size").GetInt64());
        Assert.Equal(16L << 20, exports["plain.qcow2"]);
        Assert.Equal(5L << 20, exports["v2.qcow2"]);

        string expected = _dir.File("expected.raw"), actual = _dir.File("actual.raw");
        Qemu("convert", "-O", "raw", b, expected);
        Qemu("convert", "-f", "raw", "-O", "raw", server.Uris[1], actual);
        AssertSameBytes(expected, actual);
        Assert.Equal(0, server.Stop());
    }

    [ServeFact]
    public async Task Export_name_and_a_unix_socket_are_honoured()
    {
        var img = Image("plain");
        var socket = _dir.File("q2a.sock");
        using var server = await ServeProcess.StartAsync(1, "--socket", socket, "--export-name", "vda", "--read-only", img);
        Assert.Equal($"nbd+unix:///vda?socket={socket}", server.Uri);
        var r = QemuTools.QemuIo("-r", "-f", "raw", server.Uri, "-c", "read -P 0xab 1M 200k", "-c", "read -P 0 4M 128k").EnsureSuccess();
        Assert.DoesNotContain("Pattern verification failed", r.StdOut + r.StdErr);
        Assert.Equal(0, server.Stop("INT"));
        Assert.False(File.Exists(socket), "the socket file is removed on exit");
    }

    [ServeFact]
    public async Task A_read_only_export_refuses_writes_and_leaves_the_image_alone()
    {
        var img = Image("plain");
        var before = await File.ReadAllBytesAsync(img);
        using var server = await ServeProcess.StartAsync(1, "--port", "0", "--read-only", img);
        var info = JsonDocument.Parse(QemuTools.Run("nbdinfo", "--json", server.Uri).EnsureSuccess().StdOut);
        Assert.True(info.RootElement.GetProperty("exports")[0].GetProperty("is_read_only").GetBoolean());
        // qemu sees NBD_FLAG_READ_ONLY and refuses to open the export for writing at all.
        var r = QemuTools.QemuIo("-f", "raw", server.Uri, "-c", "write -P 1 0 4k");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("Permission denied", r.StdOut + r.StdErr);
        Assert.Equal(0, server.Stop());
        Assert.Equal(before, await File.ReadAllBytesAsync(img));
    }

    [ServeFact]
    public async Task A_client_sending_garbage_does_not_disturb_another()
    {
        var img = Image("plain");
        using var server = await ServeProcess.StartAsync(1, "--port", "0", "--read-only", img);
        var uri = new Uri(server.Uri);

        // One client speaks nonsense during the handshake, another a wrong request magic after it.
        using var garbage = new TcpClient();
        await garbage.ConnectAsync(uri.Host, uri.Port);
        var stream = garbage.GetStream();
        await stream.WriteAsync(Enumerable.Range(0, 4096).Select(i => (byte)(i * 37)).ToArray());

        string expected = _dir.File("expected.raw"), actual = _dir.File("actual.raw");
        Qemu("convert", "-O", "raw", img, expected);
        Qemu("convert", "-f", "raw", "-O", "raw", server.Uri, actual);
        AssertSameBytes(expected, actual);

        // The garbage client is dropped; the server is still healthy and exits cleanly.
        var buffer = new byte[65536];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try { while (await stream.ReadAsync(buffer, timeout.Token) > 0) { } }
        catch (IOException) { }
        QemuTools.Run("nbdinfo", "--size", server.Uri).EnsureSuccess();
        Assert.Equal(0, server.Stop());
    }

    [ServeFact]
    public void Bad_arguments_fail_with_one_line_and_exit_1()
    {
        var img = Image("plain");
        var r = QemuTools.Q2a("serve", "--export-name", "x", img, img);
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("q2a: --export-name needs exactly one image", r.StdErr.Trim());

        r = QemuTools.Q2a("serve", "--port", "0", "--read-only", _dir.File("missing.qcow2"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("No such file or directory", r.StdErr);

        r = QemuTools.Q2a("serve", "--socket", _dir.File("s"), "--port", "1", img);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--socket", r.StdErr);
    }

    [ServeFact]
    public async Task Config_file_lists_exports()
    {
        var img = Image("plain");
        var conf = _dir.File("serve.conf");
        await File.WriteAllTextAsync(conf, """
            q2a.serve {
              port = 0
              read-only = true
              exports {
                first { path = "plain.qcow2" }
                second { path = "plain.qcow2", name = "again" }
              }
            }
            """);
        using var server = await ServeProcess.StartAsync(2, "--config", conf);
        Assert.EndsWith("/first", server.Uris[0]);
        Assert.EndsWith("/again", server.Uris[1]);
        string expected = _dir.File("expected.raw"), actual = _dir.File("actual.raw");
        Qemu("convert", "-O", "raw", img, expected);
        Qemu("convert", "-f", "raw", "-O", "raw", server.Uris[1], actual);
        AssertSameBytes(expected, actual);
        Assert.Equal(0, server.Stop());
    }

    // ---- base:allocation, normalised to maximal runs of (length, flags) ----

    private static List<(long Length, int Flags)> QemuAllocation(string img)
    {
        using var map = JsonDocument.Parse(QemuTools.QemuImg("map", "--output=json", img).EnsureSuccess().StdOut);
        return Merge(map.RootElement.EnumerateArray().Select(e => (
            e.GetProperty("length").GetInt64(),
            (e.GetProperty("data").GetBoolean() ? 0 : 1) | (e.GetProperty("zero").GetBoolean() ? 2 : 0))));
    }

    private static List<(long Length, int Flags)> NbdAllocation(string uri) =>
        Merge(ParseNbdinfo(QemuTools.Run("nbdinfo", "--map", "--json", uri).EnsureSuccess().StdOut));

    private static IEnumerable<(long, int)> ParseNbdinfo(string json)
    {
        using var map = JsonDocument.Parse(json);
        return [.. map.RootElement.EnumerateArray().Select(e => (e.GetProperty("length").GetInt64(), e.GetProperty("type").GetInt32()))];
    }

    private static List<(long Length, int Flags)> Merge(IEnumerable<(long Length, int Flags)> runs)
    {
        var merged = new List<(long Length, int Flags)>();
        foreach (var run in runs)
        {
            if (merged.Count > 0 && merged[^1].Flags == run.Flags) merged[^1] = (merged[^1].Length + run.Length, run.Flags);
            else merged.Add(run);
        }
        return merged;
    }
}
