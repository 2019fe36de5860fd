using System.Diagnostics;
using System.Globalization;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// Three <c>q2a host --cluster</c> processes on 127.0.0.1 sharing one data directory and one PostgreSQL journal:
/// six images served from the cluster (one owner each), flushed writes through the owners, the owner of one of
/// them SIGKILLed, its images served again by the survivors from the shared journal, every flushed write read
/// back, and after a clean stop every image <c>qemu-img check</c> clean.
/// </summary>
public sealed class ClusterFailoverInteropTests(PostgresFixture pg, ITestOutputHelper output) : IClassFixture<PostgresFixture>, IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly TempDir _dir = new();
    private readonly List<ClusterNodeProcess> _nodes = [];

    private static byte Pattern(int image, int round) => (byte)(0x10 * round + image);

    private static bool IsApiUp(string line) => line.Contains("control API on ", StringComparison.Ordinal);

    private static bool ExportAdded(string line, string export) =>
        line.Contains($"export {export} added", StringComparison.Ordinal);

    private static void QemuIoOk(params string[] args)
    {
        var r = QemuTools.QemuIo(args);
        Assert.True(r.ExitCode == 0 && !r.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase),
            $"qemu-io {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StdOut}{r.StdErr}");
    }

    [PostgresFact]
    public async Task A_killed_owners_images_are_served_again_by_survivors_with_every_flushed_write()
    {
        var data = Directory.CreateDirectory(_dir.File("shared")).FullName;
        var images = Enumerable.Range(1, 6).Select(i => $"disk{i}").ToArray();
        Directory.CreateDirectory(Path.Combine(data, "acme"));
        foreach (var image in images)
            QemuTools.QemuImg("create", "-f", "qcow2", "-o", "cluster_size=65536", Path.Combine(data, "acme", image + ".qcow2"), "64M").EnsureSuccess();

        // Three nodes, the first two the seeds; each is up once node 1 has seen all three members up.
        var ports = Enumerable.Range(0, 3).Select(_ => HostProcess.FreePort()).ToArray();
        for (int n = 0; n < 3; n++)
        {
            var node = new ClusterNodeProcess(_dir.Path, $"node{n + 1}", data, ports[n], [ports[0], ports[1]], pg.Server.ConnectionString);
            _nodes.Add(node);
        }
        var node1 = _nodes[0];
        var ups = _nodes.Select(n => node1.Line(l => l.Contains($"member up {n.Address}", StringComparison.Ordinal))).ToArray();
        // ... and each answers on its control socket (the API starts after the cluster joined).
        var apis = _nodes.Select(n => n.Line(IsApiUp)).ToArray();
        var started = Stopwatch.StartNew();
        await Task.WhenAll(ups.Concat(apis)).WaitAsync(Timeout);
        output.WriteLine($"3 nodes up in {started.Elapsed.TotalSeconds:F1} s");

        // Six images served from the cluster: each lands on exactly one node.
        var owners = new Dictionary<string, ClusterNodeProcess>();
        var added = images.ToDictionary(i => i, i => _nodes.Select(n => n.NextLine(l => ExportAdded(l, "acme/" + i)).ContinueWith(t => t.IsCompletedSuccessfully ? n : null, TaskScheduler.Default)).ToArray());
        foreach (var image in images) await node1.ServeAsync("acme", image);
        foreach (var image in images)
            owners[image] = (await (await Task.WhenAny(added[image]).WaitAsync(Timeout)))!;
        foreach (var node in _nodes)
            Assert.Equal(images.Where(i => owners[i] == node).Select(i => "acme/" + i).Order(), (await node.ClusterAsync()).OwnedImages);
        // q2a ctl shows the same: members up, the images node 1 owns.
        var status = QemuTools.Q2a("ctl", "--control", node1.ControlSocket, "--output", "json", "cluster", "status");
        Assert.True(status.ExitCode == 0, status.StdErr);
        using (var json = System.Text.Json.JsonDocument.Parse(status.StdOut))
        {
            Assert.Equal(3, json.RootElement.GetProperty("members").EnumerateArray().Count(m => m.GetProperty("status").GetString() == "up"));
            Assert.Equal(images.Where(i => owners[i] == node1).Select(i => "acme/" + i).Order(),
                json.RootElement.GetProperty("ownedImages").EnumerateArray().Select(e => e.GetString()!));
        }
        output.WriteLine(string.Join(", ", images.Select(i => $"{i}@{owners[i].Name}")));

        // Flushed writes through each owner (qemu-io: write, then flush; its exit says the flush was acknowledged).
        for (int i = 0; i < images.Length; i++)
            QemuIoOk("-f", "raw", "-c", $"write -P {Pattern(i, 1)} 0 1M", "-c", $"write -P {Pattern(i, 2)} 8M 3M", "-c", "flush", owners[images[i]].Uri("acme/" + images[i]));

        // SIGKILL the owner of disk1: its images come back on the survivors.
        var victim = owners[images[0]];
        var moved = images.Where(i => owners[i] == victim).ToArray();
        var survivors = _nodes.Where(n => n != victim).ToArray();
        var reserved = moved.ToDictionary(i => i, i => survivors.Select(n => n.NextLine(l => ExportAdded(l, "acme/" + i)).ContinueWith(t => t.IsCompletedSuccessfully ? n : null, TaskScheduler.Default)).ToArray());
        var clock = Stopwatch.StartNew();
        victim.Kill();
        foreach (var image in moved)
        {
            owners[image] = (await (await Task.WhenAny(reserved[image]).WaitAsync(Timeout)))!;
            output.WriteLine($"{image} served again by {owners[image].Name} {clock.Elapsed.TotalSeconds:F2} s after SIGKILL of {victim.Name}");
        }
        var failover = clock.Elapsed;
        foreach (var node in survivors)
            foreach (var line in node.Output.Split('\n').Where(l => l.Contains("cluster:", StringComparison.Ordinal) || l.Contains("SBR", StringComparison.Ordinal) || l.Contains(" added for image", StringComparison.Ordinal)))
                output.WriteLine($"{node.Name}: {(line.Length > 200 ? line[..200] : line)}");
        // Target < 5 s (failure detection ~1.5 s, split-brain resolver 1 s, shard restart, journal replay); the
        // bound leaves room for a loaded CI machine.
        Assert.True(failover < TimeSpan.FromSeconds(20), $"re-served after {failover.TotalSeconds:F1} s");

        // Every flushed write reads back through the (new) owners; the moved images take writes again.
        for (int i = 0; i < images.Length; i++)
        {
            var uri = owners[images[i]].Uri("acme/" + images[i]);
            QemuIoOk("-f", "raw", "-c", $"read -P {Pattern(i, 1)} 0 1M", "-c", $"read -P {Pattern(i, 2)} 8M 3M", "-c", "read -P 0 1M 7M", uri);
            QemuIoOk("-f", "raw", "-c", $"write -P {Pattern(i, 3)} 20M 1M", "-c", "flush", uri);
        }

        // A clean stop of the survivors: every image checkpointed and closed, qemu-img check clean.
        foreach (var node in survivors) Assert.Equal(0, node.Stop());
        for (int i = 0; i < images.Length; i++)
        {
            var path = Path.Combine(data, "acme", images[i] + ".qcow2");
            QemuTools.AssertCheckClean(path);
            QemuIoOk("-f", "qcow2", "-c", $"read -P {Pattern(i, 1)} 0 1M", "-c", $"read -P {Pattern(i, 2)} 8M 3M", "-c", $"read -P {Pattern(i, 3)} 20M 1M", path);
        }
        output.WriteLine($"fail-over {failover.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture)} s; total {started.Elapsed.TotalSeconds:F1} s");
    }

    public void Dispose()
    {
        foreach (var node in _nodes) node.Dispose();
        _dir.Dispose();
    }
}
