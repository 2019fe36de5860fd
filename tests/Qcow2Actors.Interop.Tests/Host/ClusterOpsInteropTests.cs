using System.Diagnostics;
using System.Text.Json;
using Akka.Cluster.Sharding;
using Npgsql;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// Cluster operations with real <c>q2a host --cluster</c> processes and PostgreSQL: the cluster-wide owner list,
/// un-serving an image, rebalancing onto a node that joins (each image moved by hand-off), and a partition (the owner
/// frozen by SIGSTOP, downed by the survivors, resumed by SIGCONT) in which the stale owner writes nothing.
/// </summary>
public sealed class ClusterOpsInteropTests(PostgresFixture pg, ITestOutputHelper output) : IClassFixture<PostgresFixture>, IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(45);

    /// <summary>
    /// A node's start: q2a runs without tiered compilation, so each node JIT-compiles the cluster stack optimized
    /// (~4.5 s of CPU alone, 2 s with tiering), while other interop test classes run beside it on CI's 2 cores.
    /// </summary>
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(120);
    private const string Tenant = "acme";
    private readonly TempDir _dir = new();
    private readonly List<ClusterNodeProcess> _nodes = [];

    private static byte Pattern(int image, int round) => (byte)(0x10 * round + image);

    private static bool ExportAdded(string line, string image) =>
        line.Contains($"export {Tenant}/{image} added", StringComparison.Ordinal);

    /// <summary>The owner's last line of taking an image: its NBD export serves from here on ("export added" comes
    /// before the export is on the NBD server: a client started at once could find no such export).</summary>
    private static bool OwnedHere(string line, string image) =>
        line.Contains($"image {Tenant}/{image} owned here", StringComparison.Ordinal);

    private static void QemuIoOk(params string[] args)
    {
        var r = QemuTools.QemuIo(args);
        Assert.True(r.ExitCode == 0 && !r.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase),
            $"qemu-io {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StdOut}{r.StdErr}");
    }

    private string CreateImages(IEnumerable<string> images)
    {
        var data = Directory.CreateDirectory(_dir.File("shared")).FullName;
        Directory.CreateDirectory(Path.Combine(data, Tenant));
        foreach (var image in images)
            QemuTools.QemuImg("create", "-f", "qcow2", "-o", "cluster_size=65536", Path.Combine(data, Tenant, image + ".qcow2"), "64M").EnsureSuccess();
        return data;
    }

    private async Task<ClusterNodeProcess> StartNodeAsync(string data, int port, int[] seeds, string connection, ClusterNodeProcess? watcher = null)
    {
        var node = new ClusterNodeProcess(_dir.Path, $"node{_nodes.Count + 1}", data, port, seeds, connection);
        _nodes.Add(node);
        // Up once the first node has seen it up and its control API answers.
        try
        {
            await Task.WhenAll(
                (watcher ?? node).Line(l => l.Contains($"member up {node.Address}", StringComparison.Ordinal)),
                node.Line(l => l.Contains("control API on ", StringComparison.Ordinal))).WaitAsync(StartTimeout);
        }
        catch (TimeoutException)
        {
            // Every node's log, or a join that never completes leaves nothing to go on.
            throw new TimeoutException($"{node.Name} not up after {StartTimeout.TotalSeconds:F0} s\n{NodeLogs()}");
        }
        catch (InvalidOperationException e)
        {
            // A node that exited (downed by its peers) has its own log in the message; why it was downed is in theirs.
            throw new InvalidOperationException($"{e.Message.Split('\n')[0]} while {node.Name} started\n{NodeLogs()}", e);
        }
        return node;
    }

    private string NodeLogs() => string.Join('\n', _nodes.Select(n => $"--- {n.Name} ({n.Address}) ---\n{n.Output}"));

    /// <summary>Serves every image from the cluster through <paramref name="via"/>; the node each one landed on.</summary>
    private async Task<Dictionary<string, ClusterNodeProcess>> ServeAsync(ClusterNodeProcess via, string[] images)
    {
        var added = images.ToDictionary(i => i, i => _nodes.Select(n => n.NextLine(l => OwnedHere(l, i))
            .ContinueWith(t => t.IsCompletedSuccessfully ? n : null, TaskScheduler.Default)).ToArray());
        foreach (var image in images) await via.ServeAsync(Tenant, image);
        var owners = new Dictionary<string, ClusterNodeProcess>();
        foreach (var image in images)
            owners[image] = (await (await Task.WhenAny(added[image]).WaitAsync(Timeout)))!;
        return owners;
    }

    private ClusterNodeProcess NodeAt(string address) => _nodes.Single(n => n.Address == address);

    /// <summary>
    /// Shard of an image as every node computes it: sharding's hash of the entity id over the default 30 shards.
    /// </summary>
    private sealed class ImageShards() : HashCodeMessageExtractor(30)
    {
        public override string? EntityId(object message) => null;
        public string Of(string image) => ShardId($"{Tenant}/{image}", null);
    }

    /// <summary>
    /// True when sharding's least-shard strategy has nothing more to move (every node within one shard below the
    /// rounded-up even share, none above it) and every image is open on its owner.
    /// </summary>
    private static bool Settled(ClusterReply status, string[] images, int nodes)
    {
        if (status.Owners.Count != images.Length || status.Owners.Any(o => o.Nbd is null) || status.Unanswered.Count > 0) return false;
        var shards = new ImageShards();
        var perNode = status.Owners.GroupBy(o => o.Node).ToDictionary(g => g.Key, g => g.Select(o => shards.Of(o.Image)).Distinct().Count());
        int total = perNode.Values.Sum();
        int optimal = (total + nodes - 1) / nodes;
        return perNode.Count == nodes && perNode.Values.All(c => c <= optimal && c >= optimal - 1);
    }

    [PostgresFact]
    public async Task A_joining_node_takes_a_share_of_the_images_by_hand_off_and_every_flushed_write_reads_back()
    {
        var images = Enumerable.Range(1, 6).Select(i => $"disk{i}").ToArray();
        var data = CreateImages(images);
        var connection = await PostgresDatabases.CreateAsync(pg.Server, "ops_rebalance");
        // The seeds' ports are needed up front; a joining node's is taken when it starts, so the running nodes'
        // outgoing connections (PostgreSQL, remoting) have had no time to land on it as their local port.
        var ports = Enumerable.Range(0, 2).Select(_ => HostProcess.FreePort()).ToArray();
        int[] seeds = [ports[0], ports[1]];
        var clock = Stopwatch.StartNew();
        var node1 = await StartNodeAsync(data, ports[0], seeds, connection);
        var node2 = await StartNodeAsync(data, ports[1], seeds, connection, node1);
        var first = await ServeAsync(node1, images);

        // The owner list covers the whole cluster, asked of either node: every image, its owner, its NBD URI there.
        foreach (var node in (ClusterNodeProcess[])[node1, node2])
        {
            var status = await node.ClusterAsync();
            Assert.Empty(status.Unanswered);
            Assert.Equal(images, status.Owners.Select(o => o.Image));
            foreach (var owner in status.Owners)
            {
                Assert.Equal(first[owner.Image].Address, owner.Node);
                Assert.Equal(first[owner.Image].Uri($"{Tenant}/{owner.Image}"), owner.Nbd);
            }
        }
        var table = QemuTools.Q2a("ctl", "--control", node2.ControlSocket, "cluster", "status");
        Assert.True(table.ExitCode == 0, table.StdErr);
        foreach (var image in images)
            Assert.Contains(table.StdOut.Split('\n'), l => l.Contains($" {image} ", StringComparison.Ordinal) && l.Contains(first[image].Address, StringComparison.Ordinal)
                && l.Contains(first[image].Uri($"{Tenant}/{image}"), StringComparison.Ordinal));
        output.WriteLine(table.StdOut);

        for (int i = 0; i < images.Length; i++)
            QemuIoOk("-f", "raw", "-c", $"write -P {Pattern(i, 1)} 0 1M", "-c", $"write -P {Pattern(i, 2)} 8M 3M", "-c", "flush", first[images[i]].Uri($"{Tenant}/{images[i]}"));

        // A third node joins: the coordinator moves shards to it, each image closed clean by its old owner first.
        var joined = clock.Elapsed;
        var node3 = new ClusterNodeProcess(_dir.Path, "node3", data, HostProcess.FreePort(), seeds, connection);
        _nodes.Add(node3);
        var up = node1.Line(l => l.Contains($"member up {node3.Address}", StringComparison.Ordinal)).ContinueWith(_ => clock.Elapsed, TaskScheduler.Default);
        var firstMove = node3.Line(l => images.Any(i => ExportAdded(l, i)));
        await firstMove.WaitAsync(Timeout);
        output.WriteLine($"node3 up {(await up - joined).TotalSeconds:F1} s after it was started; serves its first image "
            + $"{(clock.Elapsed - await up).TotalSeconds:F1} s after it was up: {await firstMove}");

        // Then wait for the moves to end: each poll is taken after arming the wait for the next image served anywhere.
        ClusterReply settled;
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var next = Task.WhenAny(_nodes.Select(n => n.NextLine(l => images.Any(i => ExportAdded(l, i)))));
            settled = await node1.ClusterAsync();
            if (Settled(settled, images, 3)) break;
            Assert.True(deadline.Elapsed < Timeout, $"not settled after {deadline.Elapsed.TotalSeconds:F0} s: {JsonSerializer.Serialize(settled)}");
            await next.WaitAsync(Timeout - deadline.Elapsed);
        }
        output.WriteLine($"settled {(clock.Elapsed - joined).TotalSeconds:F1} s after node3 started: "
            + string.Join(", ", settled.Owners.Select(o => $"{o.Image}@{NodeAt(o.Node).Name}")));
        var owners = settled.Owners.ToDictionary(o => o.Image);
        var moved = images.Where(i => owners[i].Node != first[i].Address).ToArray();
        Assert.NotEmpty(moved);
        Assert.All(moved, i => Assert.Equal(node3.Address, owners[i].Node));
        // Every moved image was handed off (checkpointed and closed) by its old owner before node3 opened it.
        foreach (var image in moved)
            Assert.Contains($"image {Tenant}/{image} handed off", first[image].Output, StringComparison.Ordinal);

        // Every flushed write reads back through the current owners, which take writes.
        for (int i = 0; i < images.Length; i++)
        {
            var uri = owners[images[i]].Nbd!;
            QemuIoOk("-f", "raw", "-c", $"read -P {Pattern(i, 1)} 0 1M", "-c", $"read -P {Pattern(i, 2)} 8M 3M", "-c", "read -P 0 1M 7M", uri);
            QemuIoOk("-f", "raw", "-c", $"write -P {Pattern(i, 3)} 20M 1M", "-c", "flush", uri);
        }

        // Un-serve one of node3's images through node1: node3 closes it clean (its file checks clean at once, the lock
        // released) and the cluster forgets it; a second un-serve finds nothing.
        var gone = moved[0];
        var unserve = QemuTools.Q2a("ctl", "--control", node1.ControlSocket, "cluster", "unserve", Tenant, gone);
        Assert.True(unserve.ExitCode == 0, unserve.StdOut + unserve.StdErr);
        Assert.Contains($"image {Tenant}/{gone} handed off", node3.Output, StringComparison.Ordinal);
        QemuTools.AssertCheckClean(Path.Combine(data, Tenant, gone + ".qcow2"));
        Assert.DoesNotContain((await node2.ClusterAsync()).Owners, o => o.Image == gone);
        var again = QemuTools.Q2a("ctl", "--control", node2.ControlSocket, "cluster", "unserve", Tenant, gone);
        Assert.Equal(1, again.ExitCode);
        Assert.Contains("image-not-found", again.StdErr, StringComparison.Ordinal);

        foreach (var node in _nodes) Assert.Equal(0, node.Stop());
        for (int i = 0; i < images.Length; i++)
        {
            var path = Path.Combine(data, Tenant, images[i] + ".qcow2");
            QemuTools.AssertCheckClean(path);
            QemuIoOk("-f", "qcow2", "-c", $"read -P {Pattern(i, 1)} 0 1M", "-c", $"read -P {Pattern(i, 2)} 8M 3M", "-c", $"read -P {Pattern(i, 3)} 20M 1M", path);
        }
        output.WriteLine($"total {clock.Elapsed.TotalSeconds:F1} s");
    }

    [PostgresFact]
    public async Task A_paused_owner_is_downed_and_fenced_and_after_it_resumes_it_writes_nothing_and_its_images_move()
    {
        var images = Enumerable.Range(1, 3).Select(i => $"disk{i}").ToArray();
        var data = CreateImages(images);
        var connection = await PostgresDatabases.CreateAsync(pg.Server, "ops_partition");
        // The seeds' ports are needed up front; a joining node's is taken when it starts, so the running nodes'
        // outgoing connections (PostgreSQL, remoting) have had no time to land on it as their local port.
        var ports = Enumerable.Range(0, 2).Select(_ => HostProcess.FreePort()).ToArray();
        int[] seeds = [ports[0], ports[1]];
        var clock = Stopwatch.StartNew();
        var node1 = await StartNodeAsync(data, ports[0], seeds, connection);
        await StartNodeAsync(data, ports[1], seeds, connection, node1);
        await StartNodeAsync(data, HostProcess.FreePort(), seeds, connection, node1);
        var owners = await ServeAsync(node1, images);
        for (int i = 0; i < images.Length; i++)
            QemuIoOk("-f", "raw", "-c", $"write -P {Pattern(i, 1)} 0 1M", "-c", $"write -P {Pattern(i, 2)} 8M 3M", "-c", "flush", owners[images[i]].Uri($"{Tenant}/{images[i]}"));

        // Freeze the owner of disk1: its peers stop hearing from it, the majority downs it and fences its journals.
        var stale = owners[images[0]];
        var staleImages = images.Where(i => owners[i] == stale).ToArray();
        var survivors = _nodes.Where(n => n != stale).ToArray();
        var downed = survivors.Select(n => n.NextLine(l => l.Contains($"member downed {stale.Address}", StringComparison.Ordinal))).ToArray();
        var fenced = Task.WhenAny(survivors.Select(n => n.NextLine(l => l.Contains($"image journal(s) of downed node {stale.Address}", StringComparison.Ordinal))));
        // The OFD lock the frozen owner still holds refuses the survivor sharding starts the image on.
        var refused = Task.WhenAny(survivors.Select(n => n.NextLine(l => l.Contains($"image {Tenant}/{images[0]} cannot be served here", StringComparison.Ordinal))));
        var reserved = staleImages.ToDictionary(i => i, i => survivors.Select(n => n.NextLine(l => ExportAdded(l, i))
            .ContinueWith(t => t.IsCompletedSuccessfully ? n : null, TaskScheduler.Default)).ToArray());
        var paused = Stopwatch.StartNew();
        stale.Pause();
        await Task.WhenAll(downed).WaitAsync(Timeout);
        output.WriteLine($"{stale.Name} downed {paused.Elapsed.TotalSeconds:F1} s after SIGSTOP");
        output.WriteLine(await await fenced.WaitAsync(Timeout));
        output.WriteLine(await await refused.WaitAsync(Timeout));

        // A client of the stale node's export sends a write to fresh space and a flush while it is frozen; once it
        // runs again the flush cannot commit (its generation is fenced): the client sees an error, never success.
        var staleWrite = Task.Run(() => QemuTools.QemuIo("-f", "raw", "-c", "write -P 0x77 32M 1M", "-c", "flush", stale.Uri($"{Tenant}/{images[0]}")));
        var exited = stale.ExitedAsync(Timeout);
        stale.Resume();
        var write = await staleWrite.WaitAsync(Timeout);
        output.WriteLine($"qemu-io against the stale node: exit {write.ExitCode}\n{write.StdOut}{write.StdErr}");
        Assert.False(write.ExitCode == 0 && !(write.StdOut + write.StdErr).Contains("fail", StringComparison.OrdinalIgnoreCase),
            "the stale node acknowledged a flush after it was downed");
        // A request that reached it was refused by the generation fence in PostgreSQL (the image turned read-only).
        if (write.StdOut.Contains("write failed", StringComparison.Ordinal) || write.StdOut.Contains("flush failed", StringComparison.Ordinal))
            await stale.Line(l => l.Contains($"image {Tenant}/{images[0]} failed (ReadOnly)", StringComparison.Ordinal)
                && l.Contains("stale owner: journal", StringComparison.Ordinal)).WaitAsync(Timeout);
        // Akka's downing makes it leave: it shuts itself down.
        var exitCode = await exited;
        Assert.True(exitCode is not null, $"{stale.Name} still runs {Timeout.TotalSeconds:F0} s after SIGCONT:\n{stale.Output}");
        foreach (var line in stale.Output.Split('\n').Where(l => l.Contains("stale owner", StringComparison.Ordinal) || l.Contains("cluster:", StringComparison.Ordinal)
                     || l.Contains("close clean", StringComparison.Ordinal) || l.Contains("EIO", StringComparison.Ordinal) || l.Contains("read-only", StringComparison.OrdinalIgnoreCase)))
            output.WriteLine($"{stale.Name}: {(line.Length > 240 ? line[..240] : line)}");
        output.WriteLine($"{stale.Name} exited with {exitCode}");
        // Resumed, it saw both survivors unreachable and may have downed them in its own view: it is not the side
        // keep-majority keeps, so it fenced none of their journals (their images would have turned read-only).
        await using (var db = NpgsqlDataSource.Create(connection))
        await using (var byStale = db.CreateCommand($"SELECT count(*) FROM {Qcow2Actors.Host.Cluster.FencedSqlJournal.GenerationTable} WHERE owner LIKE '%seen by {stale.Address}'"))
            Assert.Equal(0L, (long)(await byStale.ExecuteScalarAsync())!);

        // Its images are served again by survivors; every write flushed before the pause reads back there.
        foreach (var image in staleImages)
        {
            owners[image] = (await (await Task.WhenAny(reserved[image]).WaitAsync(Timeout)))!;
            output.WriteLine($"{image} served again by {owners[image].Name} {paused.Elapsed.TotalSeconds:F1} s after SIGSTOP");
        }
        for (int i = 0; i < images.Length; i++)
        {
            var uri = owners[images[i]].Uri($"{Tenant}/{images[i]}");
            QemuIoOk("-f", "raw", "-c", $"read -P {Pattern(i, 1)} 0 1M", "-c", $"read -P {Pattern(i, 2)} 8M 3M", uri);
            QemuIoOk("-f", "raw", "-c", $"write -P {Pattern(i, 3)} 20M 1M", "-c", "flush", uri);
        }
        foreach (var node in survivors) Assert.Equal(0, node.Stop());
        for (int i = 0; i < images.Length; i++)
        {
            var path = Path.Combine(data, Tenant, images[i] + ".qcow2");
            QemuTools.AssertCheckClean(path);
            QemuIoOk("-f", "qcow2", "-c", $"read -P {Pattern(i, 1)} 0 1M", "-c", $"read -P {Pattern(i, 2)} 8M 3M", "-c", $"read -P {Pattern(i, 3)} 20M 1M", path);
        }
        output.WriteLine($"total {clock.Elapsed.TotalSeconds:F1} s");
    }

    public void Dispose()
    {
        foreach (var node in _nodes) node.Dispose();
        _dir.Dispose();
    }
}
