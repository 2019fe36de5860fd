using System.Diagnostics;
using System.Globalization;
using System.Text;
using Qcow2Actors.Nbd.Client;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// NBD on every node (issue 13): three <c>q2a host --cluster</c> processes and PostgreSQL; clients connect to one
/// node for images another node owns, their requests forwarded to the owner. The owner SIGKILLed under fio: the
/// connection stays up, the images come back on survivors, the first flush after the unclean owner change fails with
/// EIO and every write acknowledged before the last successful flush reads back verified. A node drained under fio
/// through another node: no client error. Every image <c>qemu-img check</c> clean after a clean stop.
/// </summary>
public sealed class ClusterForwardingInteropTests(PostgresFixture pg, ITestOutputHelper output) : IClassFixture<PostgresFixture>, IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private const int BlockSize = 64 * 1024;
    private const int FsyncEvery = 16;
    private readonly TempDir _dir = new();
    private readonly List<ClusterNodeProcess> _nodes = [];
    private string _data = "";

    private static bool ExportAdded(string line, string export) => line.Contains($"export {export} added", StringComparison.Ordinal);

    /// <summary>Three nodes (the first two the seeds) up, and <paramref name="count"/> images served from the cluster; returns each image's owner.</summary>
    private async Task<(string[] Images, Dictionary<string, ClusterNodeProcess> Owners)> StartAsync(int count)
    {
        try
        {
            return await StartNodesAndServeAsync(count);
        }
        catch (TimeoutException)
        {
            // What each node was doing is the only clue to a start that hangs (CI, under load): every node's log.
            foreach (var node in _nodes) output.WriteLine($"--- {node.Name}:\n{Tail(node.Output)}");
            throw;
        }
    }

    private async Task<(string[] Images, Dictionary<string, ClusterNodeProcess> Owners)> StartNodesAndServeAsync(int count)
    {
        // Each test class gets its own PostgreSQL, each test its own database in it: the images a previous test served
        // are remembered by sharding there, and with their files gone they were started again every second on every
        // node of the next test's cluster (two CI start timeouts here).
        string prefix = "t" + Guid.NewGuid().ToString("N")[..6];
        var connection = await PostgresDatabases.CreateAsync(pg.Server, "fwd_" + prefix);
        _data = Directory.CreateDirectory(_dir.File("shared")).FullName;
        var images = Enumerable.Range(1, count).Select(i => $"{prefix}d{i}").ToArray();
        Directory.CreateDirectory(Path.Combine(_data, "acme"));
        foreach (var image in images)
            QemuTools.QemuImg("create", "-f", "qcow2", "-o", "cluster_size=65536", Path.Combine(_data, "acme", image + ".qcow2"), "64M").EnsureSuccess();
        var ports = Enumerable.Range(0, 3).Select(_ => HostProcess.FreePort()).ToArray();
        for (int n = 0; n < 3; n++)
            _nodes.Add(new ClusterNodeProcess(_dir.Path, $"node{n + 1}", _data, ports[n], [ports[0], ports[1]], connection));
        var node1 = _nodes[0];
        var started = Stopwatch.StartNew();
        await Task.WhenAll(_nodes.Select(n => node1.Line(l => l.Contains($"member up {n.Address}", StringComparison.Ordinal)))
            .Concat(_nodes.Select(n => n.Line(l => l.Contains("control API on ", StringComparison.Ordinal))))).WaitAsync(Timeout);
        output.WriteLine($"3 nodes up in {started.Elapsed.TotalSeconds:F1} s");

        var added = images.ToDictionary(i => i, i => _nodes.Select(n => n.Line(l => ExportAdded(l, "acme/" + i))
            .ContinueWith(t => t.IsCompletedSuccessfully ? n : null, TaskScheduler.Default)).ToArray());
        foreach (var image in images) await node1.ServeAsync("acme", image);
        var owners = new Dictionary<string, ClusterNodeProcess>();
        foreach (var image in images) owners[image] = (await (await Task.WhenAny(added[image]).WaitAsync(Timeout)))!;
        // Every node exports every image (the owner directly, the others forwarding to it).
        await Task.WhenAll(_nodes.SelectMany(n => images.Select(i => n.Line(l => l.Contains($"cluster image acme/{i} exported on this node", StringComparison.Ordinal)))))
            .WaitAsync(Timeout);
        output.WriteLine(string.Join(", ", images.Select(i => $"{i}@{owners[i].Name}")));
        return (images, owners);
    }

    /// <summary>A fio job file: one job per image through <paramref name="via"/>, each with <paramref name="options"/>.</summary>
    private string FioJob(string name, ClusterNodeProcess via, IEnumerable<(string Image, string Options)> jobs, string global)
    {
        var text = new StringBuilder($"[global]\nioengine=nbd\nbs={BlockSize}\n{global}\n");
        foreach (var (image, options) in jobs) text.Append(CultureInfo.InvariantCulture, $"[{image}]\nuri={via.Uri("acme/" + image)}\n{options}\n");
        var path = _dir.File(name + ".fio");
        File.WriteAllText(path, text.ToString());
        return path;
    }

    private static IEnumerable<(string Name, int Error, long Written)> Jobs(FioReport report) =>
        report.Json.GetProperty("jobs").EnumerateArray().Select(j => (j.GetProperty("jobname").GetString()!, j.GetProperty("error").GetInt32(),
            j.GetProperty("write").GetProperty("io_bytes").GetInt64()));

    private static string Tail(string text) => string.Join('\n', text.Split('\n').TakeLast(60));

    private void StopAndCheck(IEnumerable<ClusterNodeProcess> nodes, string[] images)
    {
        foreach (var node in nodes)
        {
            int code = node.Stop();
            Assert.True(code == 0, $"{node.Name} exit {code}\n{Tail(node.Output)}");
        }
        foreach (var image in images) QemuTools.AssertCheckClean(Path.Combine(_data, "acme", image + ".qcow2"));
    }

    [PostgresFact]
    public async Task Fio_through_node_A_to_images_of_a_killed_node_B_loses_no_write_acknowledged_before_its_last_successful_flush()
    {
        Assert.Null(QemuTools.SkipReason("fio"));
        var (images, owners) = await StartAsync(6);
        var a = _nodes[0];
        var b = _nodes.Skip(1).OrderByDescending(n => images.Count(i => owners[i] == n)).First();
        var moved = images.Where(i => owners[i] == b).ToArray();
        Assert.NotEmpty(moved);

        // Phase 1, through A to all six images: sequential verified writes with a flush every 16 and at the end.
        // (fio's nbd engine does not fail a job on a flush error, so the phase ends with every flush done before B dies.)
        var written = FioJob("write", a, images.Select(i => (i, "")), $"rw=write\nsize=16m\nfsync={FsyncEvery}\nend_fsync=1\nverify=crc32c\ndo_verify=0");
        using (var fio = FioProcess.Start(written))
        {
            var (code, report, stderr) = await fio.ExitAsync(Timeout);
            Assert.True(code == 0 && Jobs(report).All(j => j.Error == 0 && j.Written == 16L << 20), $"fio write exit {code}\n{stderr}");
        }

        // A connection through A to one of B's images with a write B acknowledged and nobody flushed.
        await using var client = await NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = a.NbdPort, ExportName = "acme/" + moved[0] });
        var unflushed = new byte[4096];
        unflushed.AsSpan().Fill(0xee);
        await client.WriteAsync(40L << 20, unflushed);

        // Phase 2, through A to all six images: random reads and writes past the verified region while B is SIGKILLed.
        var load = FioJob("load", a, images.Select(i => (i, "")), "rw=randrw\nbs=4k\noffset=16m\nsize=16m\nrate=256k,256k\ntime_based\nruntime=10");
        using var loading = FioProcess.Start(load);
        await loading.Running.WaitAsync(Timeout);
        var survivors = _nodes.Where(n => n != b).ToArray();
        var again = moved.ToDictionary(i => i, i => survivors.Select(n => n.NextLine(l => ExportAdded(l, "acme/" + i))
            .ContinueWith(t => t.IsCompletedSuccessfully ? n : null, TaskScheduler.Default)).ToArray());
        long killed = Stopwatch.GetTimestamp();
        b.Kill();
        var times = new List<TimeSpan>();
        foreach (var image in moved)
        {
            owners[image] = (await (await Task.WhenAny(again[image]).WaitAsync(Timeout)))!;
            times.Add(Stopwatch.GetElapsedTime(killed));
            output.WriteLine($"{image} served again by {owners[image].Name} {times[^1].TotalSeconds:F2} s after SIGKILL of {b.Name}");
        }
        var failover = Stopwatch.GetElapsedTime(killed);
        // Where the time went: every survivor's log from the SIGKILL to the last image served again, in ms after it.
        foreach (var node in survivors)
            foreach (var (after, line) in node.LinesSince(killed).Where(l => l.After <= failover))
                output.WriteLine($"+{after.TotalMilliseconds,6:F0} ms {node.Name}: {line}");
        output.WriteLine($"fail-over per image (s): {string.Join(", ", times.Select(t => t.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture)))}");
        // Issue 13's bound: every image of the killed node served again by a survivor in under 5 s.
        Assert.True(times.TrueForAll(t => t < TimeSpan.FromSeconds(5)), $"re-served after {failover.TotalSeconds:F2} s (bound 5 s)");

        // The connection through A stayed up: it reads, and its first flush says the unflushed write may be gone.
        var read = new byte[4096];
        await client.ReadAsync(0, read);
        var flush = await Assert.ThrowsAnyAsync<Exception>(async () => await client.FlushAsync());
        Assert.Contains("EIO", flush.Message, StringComparison.Ordinal);
        await client.WriteAsync(44L << 20, unflushed);
        await client.FlushAsync(); // told once; what the new owner acknowledged flushes

        // The load went on through the fail-over without an error (requests in flight were retried on the new owners).
        var (loadCode, loadReport, loadErr) = await loading.ExitAsync(Timeout);
        foreach (var (name, error, bytes) in Jobs(loadReport)) output.WriteLine($"fio load {name}: error {error}, {bytes / 4096} writes");
        Assert.True(loadCode == 0 && Jobs(loadReport).All(j => j.Error == 0), $"fio load exit {loadCode}\n{loadErr}");

        // Every block written and flushed in phase 1 reads back verified through A (B's images from their new owners).
        using (var verifying = FioProcess.Start(FioJob("verify", a, images.Select(i => (i, "")), "rw=write\nsize=16m\nverify=crc32c\nverify_only=1")))
        {
            var (code, report, stderr) = await verifying.ExitAsync(Timeout);
            Assert.True(code == 0 && Jobs(report).All(j => j.Error == 0), $"fio verify exit {code}\n{stderr}");
        }

        StopAndCheck(survivors, images);
        QemuIoOk("-f", "qcow2", "-c", "read -P 0xee 44M 4k", Path.Combine(_data, "acme", moved[0] + ".qcow2"));
        output.WriteLine($"fail-over {failover.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture)} s");
    }

    private static void QemuIoOk(params string[] args)
    {
        var r = QemuTools.QemuIo(args);
        Assert.True(r.ExitCode == 0 && !r.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), $"qemu-io {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StdOut}{r.StdErr}");
    }

    [PostgresFact]
    public async Task Draining_a_node_under_fio_through_another_node_gives_no_client_error()
    {
        Assert.Null(QemuTools.SkipReason("fio"));
        var (images, owners) = await StartAsync(4);
        var a = _nodes[0];
        var d = _nodes.Skip(1).OrderByDescending(n => images.Count(i => owners[i] == n)).First();
        var moved = images.Where(i => owners[i] == d).ToArray();
        Assert.NotEmpty(moved);

        // A connection through A to one of D's images, with a write D acknowledged and nobody flushed yet.
        await using var client = await NbdClient.ConnectAsync(new NbdClientOptions { Host = "127.0.0.1", Port = a.NbdPort, ExportName = "acme/" + moved[0] });
        var unflushed = new byte[4096];
        unflushed.AsSpan().Fill(0xd7);
        await client.WriteAsync(40L << 20, unflushed);

        // Verified random writes with a flush every 16 through A to every image; D drains meanwhile.
        var job = FioJob("drain", a, images.Select(i => (i, "")),
            $"rw=randwrite\nbs=4k\nsize=4m\nrate=400k\nfsync={FsyncEvery}\nverify=crc32c\ndo_verify=1\nverify_fatal=1");
        using var fio = FioProcess.Start(job);
        await fio.Running.WaitAsync(Timeout);
        var survivors = _nodes.Where(n => n != d).ToArray();
        var again = moved.ToDictionary(i => i, i => survivors.Select(n => n.NextLine(l => ExportAdded(l, "acme/" + i))
            .ContinueWith(t => t.IsCompletedSuccessfully ? n : null, TaskScheduler.Default)).ToArray());
        var clock = Stopwatch.StartNew();
        var drain = QemuTools.Q2a("ctl", "--control", d.ControlSocket, "cluster", "drain");
        Assert.True(drain.ExitCode == 0 && drain.StdOut.StartsWith("draining:", StringComparison.Ordinal), $"q2a ctl cluster drain: exit {drain.ExitCode}\n{drain.StdOut}{drain.StdErr}");
        var drained = await d.ExitedAsync(Timeout);
        Assert.True(drained == 0, $"{d.Name} exit {drained}\n{Tail(d.Output)}");
        output.WriteLine($"{d.Name} drained and exited 0 in {clock.Elapsed.TotalSeconds:F2} s");
        foreach (var image in moved)
        {
            var owner = (await (await Task.WhenAny(again[image]).WaitAsync(Timeout)))!;
            output.WriteLine($"{image} handed from {d.Name} to {owner.Name}");
        }
        Assert.Contains("handed off clean", d.Output + string.Join("", survivors.Select(s => s.Output)), StringComparison.Ordinal);

        // A clean hand-off (checkpoint, close): the write D acknowledged survives, and the next flush succeeds.
        await client.FlushAsync();
        var back = new byte[4096];
        await client.ReadAsync(40L << 20, back);
        Assert.Equal(unflushed, back);

        var (code, report, stderr) = await fio.ExitAsync(Timeout);
        Assert.True(code == 0 && Jobs(report).All(j => j.Error == 0), $"fio exit {code}\n{stderr}");
        StopAndCheck(survivors, images);
    }

    public void Dispose()
    {
        foreach (var node in _nodes) node.Dispose();
        _dir.Dispose();
    }
}
