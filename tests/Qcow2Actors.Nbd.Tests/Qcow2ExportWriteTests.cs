using System.Text.Json;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests;

/// <summary><see cref="Qcow2Export"/> over a read-write image in an <see cref="ImageHost"/>; qemu-img judges the result.</summary>
public sealed class Qcow2ExportWriteTests : IAsyncLifetime
{
    private const int KiB = 1024;
    private const int MiB = 1024 * 1024;
    private readonly TempDir _dir = new();
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create(name: "export-tests");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _dir.Dispose();
    }

    private async Task<(Qcow2Export Export, string Path)> CreateAsync(long size, int clusterSize = 65536, string name = "disk")
    {
        var path = _dir.File(name + ".qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = size, ClusterSize = clusterSize });
        var export = await Qcow2Export.OpenAsync(path, name, new Qcow2OpenOptions { ReadOnly = false }, _host);
        return (export, path);
    }

    private static void AssertClean(string path)
    {
        var check = QemuTools.QemuImg("check", path);
        Assert.True(check.ExitCode == 0, check.StdOut + check.StdErr);
    }

    private static byte[] Pattern(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    [NbdFact]
    public async Task Writes_zeroes_trims_and_flushes_reach_the_image()
    {
        var (export, path) = await CreateAsync(4 * MiB);
        Assert.False(export.IsReadOnly);
        await export.WriteAsync(0, Pattern(MiB, 0x61), fua: false, default);
        await export.WriteAsync(2 * MiB, Pattern(64 * KiB, 0x62), fua: true, default);
        await export.WriteZeroesAsync(128 * KiB, 128 * KiB, mayUnmap: true, fastZero: true, fua: false, default);
        await export.WriteZeroesAsync(300 * KiB, 4 * KiB, mayUnmap: false, fastZero: false, fua: false, default);
        await export.TrimAsync(512 * KiB, 256 * KiB, fua: true, default);
        await export.FlushAsync(default);

        var buffer = new byte[MiB];
        await export.ReadAsync(0, buffer, default);
        Assert.All(buffer.AsSpan(0, 128 * KiB).ToArray(), b => Assert.Equal(0x61, b));
        Assert.All(buffer.AsSpan(128 * KiB, 128 * KiB).ToArray(), b => Assert.Equal(0, b));
        Assert.All(buffer.AsSpan(300 * KiB, 4 * KiB).ToArray(), b => Assert.Equal(0, b));
        Assert.All(buffer.AsSpan(304 * KiB, 208 * KiB).ToArray(), b => Assert.Equal(0x61, b));

        var status = await export.GetBlockStatusAsync(0, MiB, default);
        Assert.Equal(new NbdExtent(128 * KiB, NbdExtentFlags.None), status[0]);
        Assert.Equal(new NbdExtent(128 * KiB, NbdExtentFlags.Hole | NbdExtentFlags.Zero), status[1]);
        await export.DisposeAsync();

        AssertClean(path);
        var r = QemuTools.QemuIo("-r", "-c", "read -P 0x61 0 128k", "-c", "read -P 0 128k 128k", "-c", "read -P 0x61 768k 256k",
            "-c", "read -P 0x62 2M 64k", "-c", "read -P 0 3M 1M", path).EnsureSuccess();
        Assert.DoesNotContain("Pattern verification failed", r.StdOut);
    }

    [NbdFact]
    public async Task Fast_zero_over_the_wire_succeeds_for_whole_clusters_and_is_refused_untouched_otherwise()
    {
        var (export, path) = await CreateAsync(MiB);
        await export.WriteAsync(0, Pattern(256 * KiB, 0x7e), fua: false, default);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await client.GoAsync("disk");

        await client.SendRequestAsync(RawNbdClient.FlagFastZero, RawNbdClient.CmdWriteZeroes, 1, 64 * KiB, 64 * KiB);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync()).Error);
        await client.SendRequestAsync(RawNbdClient.FlagFastZero | RawNbdClient.FlagNoHole, RawNbdClient.CmdWriteZeroes, 2, 128 * KiB, 64 * KiB);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync()).Error);
        await client.SendRequestAsync(RawNbdClient.FlagFastZero, RawNbdClient.CmdWriteZeroes, 3, 200 * KiB, 4 * KiB);
        Assert.Equal((uint)NbdError.NotSupported, (await client.ReadSimpleReplyAsync()).Error);

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 4, 0, 256 * KiB);
        var data = (await client.ReadSimpleReplyAsync(256 * KiB)).Data;
        Assert.All(data.AsSpan(0, 64 * KiB).ToArray(), b => Assert.Equal(0x7e, b));
        Assert.All(data.AsSpan(64 * KiB, 128 * KiB).ToArray(), b => Assert.Equal(0, b));
        Assert.All(data.AsSpan(192 * KiB).ToArray(), b => Assert.Equal(0x7e, b));

        await client.SendRequestAsync(0, RawNbdClient.CmdDisc, 5, 0, 0);
        await server.StopAsync();
        await export.FlushAsync(default);
        await export.DisposeAsync();
        AssertClean(path);
        using var map = JsonDocument.Parse(QemuTools.QemuImg("map", "--output=json", path).EnsureSuccess().StdOut);
        var zeroed = map.RootElement.EnumerateArray().First(e => e.GetProperty("start").GetInt64() == 64 * KiB);
        Assert.True(zeroed.GetProperty("zero").GetBoolean());
        Assert.False(zeroed.GetProperty("data").GetBoolean());
    }

    [NbdFact]
    public async Task Two_connections_write_and_one_flush_covers_both()
    {
        var (export, path) = await CreateAsync(8 * MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        var uri = server.GetUri("disk");
        var a = Task.Run(() => QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0x0a 0 2M", "-c", "write -P 0x0b 4M 1M").EnsureSuccess());
        var b = Task.Run(() => QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0x0c 2M 2M", "-c", "write -z 6M 64k").EnsureSuccess());
        await Task.WhenAll(a, b);
        QemuTools.QemuIo("-f", "raw", uri, "-c", "flush").EnsureSuccess();
        await server.StopAsync();
        await export.DisposeAsync();

        AssertClean(path);
        var r = QemuTools.QemuIo("-r", "-c", "read -P 0x0a 0 2M", "-c", "read -P 0x0c 2M 2M", "-c", "read -P 0x0b 4M 1M",
            "-c", "read -P 0 5M 3M", path).EnsureSuccess();
        Assert.DoesNotContain("Pattern verification failed", r.StdOut);
    }

    [NbdFact]
    public async Task A_closed_image_answers_ESHUTDOWN_and_the_connection_lives_on()
    {
        var (export, _) = await CreateAsync(MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await client.GoAsync("disk");
        await export.Image.DisposeAsync();

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 4096);
        Assert.Equal((uint)NbdError.Shutdown, (await client.ReadSimpleReplyAsync(4096)).Error);
        await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 2, 0, 512, new byte[512]);
        Assert.Equal((uint)NbdError.Shutdown, (await client.ReadSimpleReplyAsync()).Error);
    }

    [NbdFact]
    public async Task A_read_only_open_is_a_read_only_export()
    {
        var path = _dir.File("ro.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = MiB });
        await using var ro = await Qcow2Export.OpenAsync(path, "ro", new Qcow2OpenOptions { ReadOnly = true }, _host);
        Assert.True(ro.IsReadOnly);
        var ex = await Assert.ThrowsAsync<NbdException>(() => ro.WriteAsync(0, new byte[512], false, default).AsTask());
        Assert.Equal(NbdError.NotPermitted, ex.Error);
        await ro.FlushAsync(default); // nothing to make durable, but not an error
    }

    /// <summary>
    /// 512-byte clusters: one refcount table cluster covers 64 blocks of 256 clusters (8 MiB), so
    /// scattered small writes make the engine grow the refcount table while L2 tables and data
    /// clusters are being allocated around it.
    /// </summary>
    [NbdFact]
    public async Task Scattered_small_cluster_writes_across_refcount_table_growth_stay_consistent()
    {
        var (export, path) = await CreateAsync(64 * MiB, clusterSize: 512);
        var rng = new Random(7);
        var block = new byte[512];
        for (int i = 0; i < 20000; i++)
        {
            rng.NextBytes(block);
            await export.WriteAsync(rng.NextInt64(0, 64 * MiB / 512) * 512, block, fua: false, default);
        }
        await export.FlushAsync(default);
        await export.DisposeAsync();
        AssertClean(path);
    }
}
