using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Qcow2Actors.Interop.Tests.Tls;
using Qcow2Actors.Nbd.Client;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Nbd;

/// <summary>A fact that needs qemu-nbd, qemu-img, qemu-io and nbdinfo.</summary>
public sealed class QemuNbdFactAttribute : FactAttribute
{
    public QemuNbdFactAttribute() { Skip = QemuTools.SkipReason("qemu-nbd", "qemu-img", "qemu-io", "nbdinfo"); }
}

/// <summary>A fact that needs certtool besides qemu-nbd.</summary>
public sealed class QemuNbdTlsFactAttribute : FactAttribute
{
    public QemuNbdTlsFactAttribute() { Skip = QemuTools.SkipReason("qemu-nbd", "qemu-img", "qemu-io", "certtool"); }
}

/// <summary>
/// <see cref="NbdClient"/> and <see cref="NbdBlockDevice"/> against real <c>qemu-nbd</c>: what qemu-io wrote reads back,
/// what the client writes is what <c>qemu-img compare</c> finds, block status is what nbdinfo and qemu-img map report,
/// TLS with certtool's certificates, QEMU's own error replies, many reads in flight at once.
/// </summary>
public sealed class NbdClientQemuNbdTests : IDisposable
{
    private const int KiB = 1024;
    private const int MiB = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Socket => _dir.File("nbd.sock");

    private NbdClientOptions Unix(string export = "disk") => new() { UnixSocket = Socket, ExportName = export };

    /// <summary>qemu-nbd serving <paramref name="image"/> as export "disk" on <see cref="Socket"/>; extra arguments (-r, -e) first.</summary>
    private QemuNbdProcess Serve(string image, string format, params string[] extra) =>
        QemuNbdProcess.StartWith(_dir, $"nbd+unix:///disk?socket={Socket}", [.. extra, "-f", format, "-x", "disk", "-k", Socket, image]);

    private string Qcow2(string name, string size, params string[] ioCommands)
    {
        var image = _dir.File(name);
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", image, size).EnsureSuccess();
        if (ioCommands.Length > 0) QemuTools.QemuIo([.. ioCommands.SelectMany(c => new[] { "-c", c }), image]).EnsureSuccess();
        return image;
    }

    private static int FreePort()
    {
        using var probe = new System.Net.Sockets.Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    [QemuNbdFact]
    public async Task Reads_what_qemu_io_wrote()
    {
        var image = Qcow2("r.qcow2", "4M", "write -P 0x5a 64k 192k", "write -P 0xa5 3M 4k");
        using var nbd = Serve(image, "qcow2", "-r");
        await using var client = await NbdClient.ConnectAsync(Unix());

        Assert.Equal(4 * MiB, client.Size);
        Assert.True(client.IsReadOnly);
        var buffer = new byte[4 * MiB];
        await client.ReadAsync(0, buffer);
        Assert.All(buffer.AsSpan(0, 64 * KiB).ToArray(), b => Assert.Equal(0, b));
        Assert.All(buffer.AsSpan(64 * KiB, 192 * KiB).ToArray(), b => Assert.Equal(0x5a, b));
        Assert.All(buffer.AsSpan(3 * MiB, 4 * KiB).ToArray(), b => Assert.Equal(0xa5, b));
        Assert.Equal(-1, buffer.AsSpan(256 * KiB, 3 * MiB - 256 * KiB).IndexOfAnyExcept((byte)0));
    }

    [QemuNbdFact]
    public async Task What_the_client_writes_is_what_qemu_img_compare_finds()
    {
        var image = Qcow2("w.qcow2", "8M", "write -P 0x11 0 1M");
        var model = new byte[8 * MiB];
        model.AsSpan(0, MiB).Fill(0x11);
        using (var nbd = Serve(image, "qcow2"))
        {
            await using var client = await NbdClient.ConnectAsync(Unix());
            var data = new byte[3 * MiB + 777];
            new Random(21).NextBytes(data);
            await client.WriteAsync(2 * MiB + 5, data);
            data.CopyTo(model, 2 * MiB + 5);
            await client.WriteZeroesAsync(512 * KiB, 256 * KiB, mayTrim: false);
            model.AsSpan(512 * KiB, 256 * KiB).Clear();
            await client.WriteZeroesAsync(7 * MiB, MiB, mayTrim: true, fua: true);
            await client.WriteAsync(100, new byte[] { 1, 2, 3 }, fua: true);
            model[100] = 1; model[101] = 2; model[102] = 3;
            await client.TrimAsync(6 * MiB, 64 * KiB); // nothing was there: reads as zeros either way
            await client.FlushAsync();
            nbd.Stop();
        }
        var reference = _dir.File("model.raw");
        await File.WriteAllBytesAsync(reference, model);
        var compare = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", image, reference);
        Assert.True(compare.ExitCode == 0, compare.StdOut + compare.StdErr);
        QemuTools.AssertCheckClean(image);
    }

    [QemuNbdFact]
    public async Task Block_status_of_a_sparse_image_matches_nbdinfo_map_and_qemu_img_map()
    {
        var image = Qcow2("s.qcow2", "16M", "write -P 1 0 128k", "write -z 1M 64k", "write -P 2 2M 192k", "write -P 3 9M 64k", "write -z 9M 32k");
        List<(long Offset, long Length, uint Flags)> ours = [];
        using (Serve(image, "qcow2", "-r", "-e", "2"))
        {
            await using (var device = new NbdBlockDevice(await NbdClient.ConnectAsync(Unix()), "nbd+unix:///disk"))
            {
                for (long at = 0; at < device.Length;)
                {
                    var run = await device.GetAllocationAsync(at, device.Length - at);
                    ours.Add((at, run.Length, (run.Allocated ? 0u : 1u) | (run.Zero ? 2u : 0u)));
                    at += run.Length;
                }
            }
            var map = QemuTools.Run("nbdinfo", "--map", "--json", $"nbd+unix:///disk?socket={Socket}").EnsureSuccess().StdOut;
            var theirs = JsonDocument.Parse(map).RootElement.EnumerateArray()
                .Select(e => (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetUInt32()));
            Assert.Equal(Merge(theirs), Merge(ours));
        }

        // qemu-img map on the image itself: data = allocated, zero = reads as zeros.
        var qemuMap = QemuTools.QemuImg("map", "--output=json", image).EnsureSuccess().StdOut;
        var fromQemuImg = JsonDocument.Parse(qemuMap).RootElement.EnumerateArray()
            .Select(e => (e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(),
                (e.GetProperty("data").GetBoolean() ? 0u : 1u) | (e.GetProperty("zero").GetBoolean() ? 2u : 0u)));
        Assert.Equal(Merge(fromQemuImg), Merge(ours));
        Assert.Contains(ours, r => r.Flags == 0);
        Assert.Contains(ours, r => r.Flags == 3);
    }

    /// <summary>Runs with adjacent equal flags joined, so reports cut at different places compare equal.</summary>
    private static List<(long Offset, long Length, uint Flags)> Merge(IEnumerable<(long Offset, long Length, uint Flags)> runs)
    {
        var merged = new List<(long Offset, long Length, uint Flags)>();
        foreach (var run in runs)
        {
            if (merged.Count > 0 && merged[^1].Flags == run.Flags && merged[^1].Offset + merged[^1].Length == run.Offset)
                merged[^1] = (merged[^1].Offset, merged[^1].Length + run.Length, run.Flags);
            else merged.Add(run);
        }
        return merged;
    }

    [QemuNbdFact]
    public async Task Many_concurrent_reads_of_a_raw_image_each_get_their_own_bytes()
    {
        var image = _dir.File("c.raw");
        var content = new byte[16 * MiB];
        new Random(22).NextBytes(content);
        await File.WriteAllBytesAsync(image, content);
        using var nbd = Serve(image, "raw", "-r");
        await using var client = await NbdClient.ConnectAsync(Unix());

        var random = new Random(23);
        var reads = Enumerable.Range(0, 256).Select(_ =>
        {
            var offset = random.Next(0, 16 * MiB - 300 * KiB);
            var buffer = new byte[random.Next(1, 300 * KiB)];
            return (offset, buffer, task: client.ReadAsync(offset, buffer).AsTask());
        }).ToList();
        await Task.WhenAll(reads.Select(r => r.task));
        foreach (var (offset, buffer, _) in reads) Assert.True(content.AsSpan(offset, buffer.Length).SequenceEqual(buffer), $"read at {offset}");
    }

    [QemuNbdFact]
    public async Task An_unknown_export_and_a_write_to_a_read_only_export_are_one_line_each()
    {
        var image = Qcow2("u.qcow2", "1M");
        using var nbd = Serve(image, "qcow2", "-r");

        var unknown = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(Unix("nope")));
        Assert.Equal($"export 'nope' not found on nbd server unix:{Socket}", unknown.Message);

        await using var client = await NbdClient.ConnectAsync(Unix());
        var write = await Assert.ThrowsAsync<IOException>(async () => await client.WriteAsync(0, new byte[512]));
        Assert.Equal($"nbd export 'disk' on unix:{Socket} is read-only (the server exports it read-only): write refused", write.Message);
    }

    [QemuNbdFact]
    public async Task Qemu_nbds_error_reply_is_an_IOException_naming_the_errno_and_a_hang_up_is_one_line()
    {
        var image = Qcow2("e.qcow2", "4M", "write -P 7 0 128k");
        // blkdebug fails every data write (ENOSPC) and every data read (EIO) of the qcow2 file; holes are never read from it.
        var opts = "driver=qcow2,file.driver=blkdebug,file.inject-error.0.event=write_aio,file.inject-error.0.errno=28,"
            + $"file.inject-error.1.event=read_aio,file.inject-error.1.errno=5,file.image.filename={image}";
        using var nbd = QemuNbdProcess.StartWith(_dir, "", "-x", "disk", "-k", Socket, "--image-opts", opts);
        await using var client = await NbdClient.ConnectAsync(Unix());

        var ex = await Assert.ThrowsAsync<IOException>(async () => await client.WriteAsync(MiB, new byte[4096]));
        Assert.StartsWith($"nbd server unix:{Socket} export 'disk': ENOSPC on write at {MiB} length 4096: ", ex.Message); // then qemu's own text
        Assert.DoesNotContain('\n', ex.Message);
        Assert.Equal(28, ex.HResult);
        var hole = new byte[4096];
        await client.ReadAsync(2 * MiB, hole); // the connection carries on
        Assert.Equal(-1, hole.AsSpan().IndexOfAnyExcept((byte)0));

        // qemu-nbd 7.2 answers a failed sparse read by dropping the connection rather than with an error chunk.
        var read = await Assert.ThrowsAnyAsync<IOException>(async () => await client.ReadAsync(4096, new byte[4096]));
        Assert.Equal($"nbd server unix:{Socket} export 'disk': the server closed the connection", read.Message);
    }

    [QemuNbdTlsFact]
    public async Task Tls_with_certtool_certificates_against_qemu_nbd_and_refusals_name_the_reason()
    {
        var pki = new CertToolPki(_dir.Path);
        var image = Qcow2("t.qcow2", "2M", "write -P 0x3c 0 64k");
        var port = FreePort();
        using var nbd = QemuNbdProcess.StartWith(_dir, "", "-r", "-e", "4", "-f", "qcow2", "-x", "disk", "-b", "127.0.0.1",
            "-p", port.ToString(CultureInfo.InvariantCulture),
            "--object", $"tls-creds-x509,id=tls0,dir={pki.ServerDir},endpoint=server", "--tls-creds", "tls0", image);
        var options = new NbdClientOptions { Host = "127.0.0.1", Port = port, ExportName = "disk" };

        await using (var client = await NbdClient.ConnectAsync(options with { Tls = new NbdClientTls { Directory = pki.AcmeDir } }))
        {
            var buffer = new byte[64 * KiB];
            await client.ReadAsync(0, buffer);
            Assert.All(buffer, b => Assert.Equal(0x3c, b));
            Assert.Equal(["base:allocation"], client.MetaContexts);
        }

        var plain = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(options));
        Assert.Equal($"nbd server 127.0.0.1:{port} requires TLS for export 'disk' (NBD_REP_ERR_TLS_REQD); connect with TLS credentials", plain.Message);

        var name = await Assert.ThrowsAsync<IOException>(() =>
            NbdClient.ConnectAsync(options with { Tls = new NbdClientTls { Directory = pki.AcmeDir, Hostname = "elsewhere.example" } }));
        Assert.Contains("its certificate is not for 'elsewhere.example'", name.Message);

        var noCertificate = await Assert.ThrowsAsync<IOException>(() => NbdClient.ConnectAsync(options with { Tls = new NbdClientTls { Directory = pki.NoCertDir } }));
        Assert.Contains($"nbd server 127.0.0.1:{port}", noCertificate.Message); // qemu-nbd drops a client without a certificate
        Assert.DoesNotContain('\n', noCertificate.Message);
    }
}
