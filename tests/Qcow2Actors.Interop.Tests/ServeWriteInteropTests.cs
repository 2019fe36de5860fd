using System.Net.Sockets;
using System.Text.Json;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>A fact that needs fio with its nbd engine besides qemu's and libnbd's tools.</summary>
public sealed class FioFactAttribute : FactAttribute
{
    public FioFactAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io", "nbdinfo", "nbdcopy", "fio"); }
}

/// <summary>
/// Writing through <c>q2a serve</c> with real clients, then stopping it with a signal: the image
/// must pass <c>qemu-img check</c> and hold exactly what qemu-io would have written itself.
/// </summary>
public sealed class ServeWriteInteropTests : IDisposable
{
    private const long MiB = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static void AssertClean(string img)
    {
        var check = QemuTools.QemuImg("check", img);
        Assert.True(check.ExitCode == 0, $"qemu-img check: exit {check.ExitCode}\n{check.StdOut}{check.StdErr}");
        Assert.Contains("No errors were found on the image.", check.StdOut);
    }

    private static void AssertIo(string target, string format, params string[] commands)
    {
        var args = new List<string> { "-r", "-f", format };
        foreach (var c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(target);
        var r = QemuTools.Run("qemu-io", args).EnsureSuccess();
        Assert.DoesNotContain("Pattern verification failed", r.StdOut + r.StdErr);
    }

    [ServeFact]
    public async Task A_created_image_takes_writes_and_closes_clean_on_sigterm()
    {
        var img = _dir.File("new.qcow2");
        using (var server = await ServeProcess.StartAsync(1, "--port", "0", "--create", "64M", img))
        {
            Assert.EndsWith("/new.qcow2", server.Uri);
            var info = JsonDocument.Parse(QemuTools.Run("nbdinfo", "--json", server.Uri).EnsureSuccess().StdOut);
            var export = info.RootElement.GetProperty("exports")[0];
            Assert.Equal(64 * MiB, export.GetProperty("export-size").GetInt64());
            Assert.False(export.GetProperty("is_read_only").GetBoolean());

            var r = QemuTools.QemuIo("-f", "raw", server.Uri,
                "-c", "write -P 0x5a 0 1M",
                "-c", "write -P 0x6b -f 3M 64k",
                "-c", "write -z 512k 128k",
                "-c", "write -P 0x7c 10M 4k",
                "-c", "write -z -u 20M 2M",
                "-c", "write -P 0x11 40M 3M",
                "-c", "discard 41M 1M",
                "-c", "flush",
                "-c", "read -P 0x5a 0 512k",
                "-c", "read -P 0 512k 128k",
                "-c", "read -P 0x6b 3M 64k").EnsureSuccess();
            Assert.DoesNotContain("Pattern verification failed", r.StdOut + r.StdErr);
            Assert.Equal(0, server.Stop());
        }

        AssertClean(img);
        AssertIo(img, "qcow2",
            "read -P 0x5a 0 512k", "read -P 0 512k 128k", "read -P 0x5a 640k 384k",
            "read -P 0x6b 3M 64k", "read -P 0x7c 10M 4k", "read -P 0 20M 2M",
            "read -P 0x11 40M 1M", "read -P 0x11 42M 1M", "read -P 0 63M 1M");
        var info2 = JsonDocument.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut);
        Assert.Equal(64 * MiB, info2.RootElement.GetProperty("virtual-size").GetInt64());
    }

    [ServeFact]
    public async Task Create_leaves_an_existing_image_alone()
    {
        var img = _dir.File("old.qcow2");
        Qemu("create", "-q", "-f", "qcow2", img, "4M");
        Io(img, ["write -P 0x33 0 64k"]);
        using var server = await ServeProcess.StartAsync(1, "--port", "0", "--create", "1G", img);
        Assert.Equal("4194304", QemuTools.Run("nbdinfo", "--size", server.Uri).EnsureSuccess().StdOut.Trim());
        Assert.Equal(0, server.Stop());
        AssertIo(img, "qcow2", "read -P 0x33 0 64k");
    }

    [ServeTheory]
    [InlineData("v3", 11)]
    [InlineData("chain", 12)]
    [InlineData("subclusters", 13)]
    [InlineData("small-clusters", 14)]
    public async Task Random_writes_over_nbd_leave_what_qemu_io_leaves_on_a_copy(string kind, int seed)
    {
        string img = _dir.File("served.qcow2"), copy = _dir.File("copy.qcow2");
        long size = 24 * MiB;
        switch (kind)
        {
            case "v3":
                Qemu("create", "-q", "-f", "qcow2", img, "24M");
                break;
            case "chain":
                string bas = _dir.File("base.qcow2");
                Qemu("create", "-q", "-f", "qcow2", bas, "16M");
                Io(bas, RandomWrites(seed + 100, 16 * MiB, 40));
                Qemu("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", img, "24M");
                break;
            case "subclusters":
                Qemu("create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", img, "24M");
                break;
            case "small-clusters":
                // 512-byte clusters: one L2 table covers 32 KiB, so writes cross many tables.
                Qemu("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "24M");
                break;
        }
        Io(img, RandomWrites(seed + 200, size, 20));
        File.Copy(img, copy);

        var writes = RandomWrites(seed, size, 150).Select((c, i) => i % 7 == 3 && c.StartsWith("write -z", StringComparison.Ordinal)
            ? c.Replace("write -z", "write -z -u", StringComparison.Ordinal) : c).ToList();
        writes.Insert(75, "flush");
        Io(copy, writes);

        using (var server = await ServeProcess.StartAsync(1, "--port", "0", img))
        {
            Io(server.Uri, writes, format: "raw");
            Assert.Equal(0, server.Stop());
        }

        AssertClean(img);
        var compare = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "qcow2", copy, img);
        Assert.True(compare.ExitCode == 0, compare.StdOut + compare.StdErr);
    }

    [FioFact]
    public async Task Fio_verifies_crc32c_over_two_connections()
    {
        var img = _dir.File("fio.qcow2");
        using (var server = await ServeProcess.StartAsync(1, "--port", "0", "--create", "128M", img))
        {
            var job = _dir.File("verify.fio");
            await File.WriteAllTextAsync(job, $"""
                [global]
                ioengine=nbd
                uri={server.Uri}
                rw=randwrite
                bsrange=4k-64k
                size=24m
                iodepth=8
                verify=crc32c
                verify_fatal=1
                do_verify=1
                [first]
                offset=0
                [second]
                offset=48m
                """);
            var r = QemuTools.Run("fio", [job, "--output-format=json"], timeoutSeconds: 300);
            Assert.True(r.ExitCode == 0, $"fio exit {r.ExitCode}\n{r.StdErr}\n{r.StdOut}");
            using var result = JsonDocument.Parse(r.StdOut[r.StdOut.IndexOf('{')..]);
            var jobs = result.RootElement.GetProperty("jobs").EnumerateArray().ToList();
            Assert.Equal(2, jobs.Count);
            Assert.All(jobs, j => Assert.Equal(0, j.GetProperty("error").GetInt32()));
            Assert.Equal(0, server.Stop());
        }
        AssertClean(img);
    }

    [ServeFact]
    public async Task Sigterm_in_the_middle_of_a_copy_still_closes_clean()
    {
        var img = _dir.File("copy.qcow2");
        var source = _dir.File("source.raw");
        await File.WriteAllBytesAsync(source, TestBytes(96 * (int)MiB, 5));
        using var server = await ServeProcess.StartAsync(1, "--port", "0", "--create", "96M", img);
        // --progress=1: nbdcopy reports "N/100" lines on stdout as the copy goes.
        using var copy = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("nbdcopy", new[] { "--progress=1", source, server.Uri })
            { RedirectStandardError = true, RedirectStandardOutput = true })!;
        using (var guard = new CancellationTokenSource(TimeSpan.FromSeconds(60))) // only against a hang
        {
            // Stop once data is flowing: the first report past 0% (the copy is under way, writes in flight).
            string? line;
            while ((line = await copy.StandardOutput.ReadLineAsync(guard.Token)) is not null && line.Trim() is "0/100" or "") { }
            Assert.True(line is not null, $"nbdcopy ended before reporting progress: {await copy.StandardError.ReadToEndAsync()}");
        }
        Assert.Equal(0, server.Stop());
        copy.WaitForExit(30_000);
        AssertClean(img);
    }

    [ServeFact]
    public async Task A_client_sending_garbage_does_not_disturb_a_writer()
    {
        var img = _dir.File("g.qcow2");
        using var server = await ServeProcess.StartAsync(1, "--port", "0", "--create", "8M", img);
        var uri = new Uri(server.Uri);

        string[] io = ["-f", "raw", server.Uri, .. Enumerable.Range(0, 64).SelectMany(i => new[] { "-c", $"write -P {i + 1} {i * 128}k 128k" }), "-c", "flush"];
        var writer = Task.Run(() => QemuTools.QemuIo(io));
        for (int i = 0; i < 20; i++)
        {
            using var garbage = new TcpClient();
            await garbage.ConnectAsync(uri.Host, uri.Port);
            var junk = Enumerable.Range(0, 8192).Select(b => (byte)(b * (i + 7))).ToArray();
            try { await garbage.GetStream().WriteAsync(junk); } catch (IOException) { }
        }
        (await writer).EnsureSuccess();
        Assert.Equal(0, server.Stop());
        AssertClean(img);
        AssertIo(img, "qcow2", [.. Enumerable.Range(0, 64).Select(i => $"read -P {i + 1} {i * 128}k 128k")]);
    }

    private static byte[] TestBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        // Leave zero runs so the copy mixes writes and zeroing.
        for (int i = 0; i < length; i += 3 * 1024 * 1024) bytes.AsSpan(i, Math.Min(1024 * 1024, length - i)).Clear();
        return bytes;
    }
}
