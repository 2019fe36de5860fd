using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>
/// <see cref="DiscardMode"/> over the wire, with qemu-io as the client: TRIM is advertised either
/// way (as qemu-nbd does); ignore keeps the data, unmap frees the clusters.
/// </summary>
public sealed class Qcow2ExportDiscardTests : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create(name: "export-discard-tests");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _dir.Dispose();
    }

    [NbdFact]
    public async Task Trim_with_discard_ignore_keeps_the_data_and_with_unmap_frees_it()
    {
        foreach (var (mode, after) in new[] { (DiscardMode.Ignore, "0xab"), (DiscardMode.Unmap, "0") })
        {
            var path = _dir.File($"{mode}.qcow2");
            ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4 * 1024 * 1024 });
            var export = await Qcow2Export.OpenAsync(path, "disk", new Qcow2OpenOptions { ReadOnly = false }, _host, mode);
            await using (var server = await TestServers.StartTcpAsync(export))
            {
                var uri = server.GetUri();
                QemuTools.Run("nbdinfo", "--can", "trim", uri).EnsureSuccess();
                QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0xab 0 256k", "-c", "flush", "-c", "discard 0 256k", "-c", "flush",
                    "-c", $"read -P {after} 0 256k").EnsureSuccess();
                // WRITE_ZEROES may unmap only under unmap; either way the range reads zeros.
                QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0xcd 1M 128k", "-c", "write -z -u 1M 128k", "-c", "read -P 0 1M 128k").EnsureSuccess();
            }
            await export.DisposeAsync();
            QemuTools.AssertCheckClean(path);
            var map = QemuTools.QemuImg("map", "--output=json", path).EnsureSuccess().StdOut;
            // ignore: the trimmed range and the zeroed one stay allocated; unmap: neither holds data.
            Assert.Equal(mode == DiscardMode.Ignore, map.Contains("\"start\": 0, \"length\": 262144, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true", StringComparison.Ordinal));
            QemuTools.QemuIo("-r", "-c", $"read -P {after} 0 256k", "-c", "read -P 0 1M 128k", path).EnsureSuccess();
        }
    }
}
