using System.Text.Json;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>Real clients (QEMU, libnbd, fio) against the server: the oracle for wire compatibility.</summary>
public sealed class ClientToolTests
{
    private const int MiB = 1024 * 1024;

    [NbdFact]
    public async Task QemuIo_writes_and_verifies_patterns_over_tcp()
    {
        var export = new MemoryExport("disk", 4 * MiB);
        await using var server = await TestServers.StartTcpAsync(export);

        var r = QemuTools.QemuIo("-f", "raw", server.GetUri("disk"),
            "-c", "write -P 0xab 0 64k",
            "-c", "read -P 0xab 0 64k",
            "-c", "write -P 0xcd -f 1m 4k", // FUA write
            "-c", "write -z 8k 4k",
            "-c", "read -P 0 8k 4k",
            "-c", "discard 2m 1m",
            "-c", "flush",
            "-c", "read -P 0xcd 1m 4k").EnsureSuccess();
        Assert.DoesNotContain("Pattern verification failed", r.StdOut + r.StdErr);

        var content = export.ToArray();
        Assert.All(content.AsSpan(0, 8192).ToArray(), b => Assert.Equal(0xab, b));
        Assert.All(content.AsSpan(8192, 4096).ToArray(), b => Assert.Equal(0, b));
        Assert.All(content.AsSpan(MiB, 4096).ToArray(), b => Assert.Equal(0xcd, b));
        Assert.True(export.FlushCount >= 2, "FUA and flush reach the export");
    }

    [NbdFact]
    public async Task QemuIo_works_over_a_unix_socket_with_the_default_export()
    {
        using var dir = new TempDir();
        var export = new MemoryExport("only", MiB);
        await using var server = await TestServers.StartUnixAsync(dir.File("nbd.sock"), export);
        var uri = server.GetUri("");
        Assert.StartsWith("nbd+unix:///?socket=", uri);

        QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0x5a 4k 8k", "-c", "read -P 0x5a 4k 8k").EnsureSuccess();
        Assert.Equal(0x5a, export.ToArray()[4096]);
    }

    [NbdFact]
    public async Task QemuIo_pattern_mismatch_is_detected()
    {
        // Guards the guard: a wrong pattern must fail, or the tests above prove nothing.
        var export = new MemoryExport("disk", MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        var r = QemuTools.QemuIo("-f", "raw", server.GetUri(), "-c", "write -P 0x11 0 4k", "-c", "read -P 0x22 0 4k");
        Assert.Contains("Pattern verification failed", r.StdOut + r.StdErr);
    }

    [NbdFact]
    public async Task QemuImg_convert_copies_the_export_byte_for_byte()
    {
        using var dir = new TempDir();
        var export = new MemoryExport("src", 8 * MiB);
        export.Write(0, TestServers.RandomBytes(300_000, 1));
        export.Write(5 * MiB + 123, TestServers.RandomBytes(70_000, 2));
        await using var server = await TestServers.StartTcpAsync(export);

        var output = dir.File("out.raw");
        QemuTools.QemuImg("convert", "-f", "raw", "-O", "raw", server.GetUri("src"), output).EnsureSuccess();
        Assert.Equal(export.ToArray(), await File.ReadAllBytesAsync(output));
    }

    [NbdFact]
    public async Task Nbdinfo_lists_every_export_with_its_description()
    {
        var a = new MemoryExport("alpha", MiB, description: "first disk");
        var b = new MemoryExport("beta", 2 * MiB, isReadOnly: true);
        await using var server = await TestServers.StartTcpAsync(a, b);

        var r = QemuTools.Run("nbdinfo", "--list", "--json", server.GetUri("")).EnsureSuccess();
        using var json = JsonDocument.Parse(r.StdOut);
        var exports = json.RootElement.GetProperty("exports").EnumerateArray().ToList();
        Assert.Equal(["alpha", "beta"], exports.Select(e => e.GetProperty("export-name").GetString()));
        Assert.Equal("first disk", exports[0].GetProperty("description").GetString());
        Assert.Equal(2 * MiB, exports[1].GetProperty("export-size").GetInt64());
        Assert.True(exports[1].GetProperty("is_read_only").GetBoolean());
        Assert.True(exports[0].GetProperty("can_multi_conn").GetBoolean());
        Assert.True(exports[0].GetProperty("can_fast_zero").GetBoolean());
    }

    [NbdFact]
    public async Task Nbdinfo_map_agrees_with_the_allocation()
    {
        var export = new MemoryExport("sparse", 4 * MiB);
        export.Write(64 * 1024, new byte[8192].Select(_ => (byte)1).ToArray());
        export.Write(3 * MiB, TestServers.RandomBytes(100_000, 3));
        await using var server = await TestServers.StartTcpAsync(export);

        var r = QemuTools.Run("nbdinfo", "--map", "--json", server.GetUri("sparse")).EnsureSuccess();
        using var json = JsonDocument.Parse(r.StdOut);
        var data = json.RootElement.EnumerateArray()
            .Where(e => (e.GetProperty("type").GetInt32() & 1) == 0)
            .Select(e => (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64()))
            .ToList();
        Assert.Equal(export.AllocatedRanges(), data);
        var total = json.RootElement.EnumerateArray().Sum(e => e.GetProperty("length").GetInt64());
        Assert.Equal(export.Size, total);
    }

    [NbdFact]
    public async Task Nbdcopy_copies_in_and_out()
    {
        using var dir = new TempDir();
        var source = dir.File("in.raw");
        var bytes = TestServers.RandomBytes(3 * MiB, 4);
        Array.Clear(bytes, MiB, MiB); // a zero run, which nbdcopy may send as write-zeroes
        await File.WriteAllBytesAsync(source, bytes);

        var export = new MemoryExport("target", 3 * MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        QemuTools.Run("nbdcopy", source, server.GetUri("target")).EnsureSuccess();
        Assert.Equal(bytes, export.ToArray());

        var back = dir.File("out.raw");
        QemuTools.Run("nbdcopy", server.GetUri("target"), back).EnsureSuccess();
        Assert.Equal(bytes, await File.ReadAllBytesAsync(back));
    }

    [NbdFact]
    public async Task Fio_randwrite_with_crc32c_verify_over_two_connections()
    {
        var export = new MemoryExport("fio", 16 * MiB);
        await using var server = await TestServers.StartTcpAsync(export);

        var r = QemuTools.Run("fio", [
            "--name=nbdverify", "--ioengine=nbd", $"--uri={server.GetUri("fio")}",
            "--rw=randwrite", "--bs=4k", "--iodepth=16", "--numjobs=2",
            "--size=4m", "--offset_increment=8m", // each job owns its own region, so verification is sound
            "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--group_reporting",
        ], timeoutSeconds: 60);
        Assert.True(r.ExitCode == 0, r.StdErr + r.StdOut);
        Assert.DoesNotContain("verify: bad", r.StdErr + r.StdOut);
    }

    [NbdFact]
    public async Task Raw_file_export_serves_a_plain_file()
    {
        using var dir = new TempDir();
        var path = dir.File("disk.raw");
        await File.WriteAllBytesAsync(path, new byte[2 * MiB]);
        using (var export = RawFileExport.Open(path, "file"))
        {
            await using var server = await TestServers.StartTcpAsync(export);
            QemuTools.QemuIo("-f", "raw", server.GetUri("file"),
                "-c", "write -P 0x77 512k 128k", "-c", "write -z 0 4k", "-c", "flush", "-c", "read -P 0x77 512k 128k").EnsureSuccess();
            await server.StopAsync();
        }
        var content = await File.ReadAllBytesAsync(path);
        Assert.All(content.AsSpan(512 * 1024, 128 * 1024).ToArray(), b => Assert.Equal(0x77, b));
        Assert.Equal(2 * MiB, content.Length);
    }

    [NbdFact]
    public async Task A_read_only_export_refuses_qemu_writes()
    {
        var export = new MemoryExport("ro", MiB, isReadOnly: true);
        export.Write(0, new byte[] { 1, 2, 3 });
        await using var server = await TestServers.StartTcpAsync(export);

        QemuTools.QemuIo("-r", "-f", "raw", server.GetUri("ro"), "-c", "read -P 0 4k 4k").EnsureSuccess();
        var r = QemuTools.QemuIo("-f", "raw", server.GetUri("ro"), "-c", "write -P 1 0 4k");
        var output = r.StdOut + r.StdErr;
        // qemu sees NBD_FLAG_READ_ONLY and refuses a read-write open; EPERM on the wire is in ProtocolTests.
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("Permission denied", output);
        Assert.Equal(1, export.ToArray()[0]);
    }
}
