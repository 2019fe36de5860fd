using System.Text.Json;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Snapshots;

/// <summary>
/// Snapshots of an image that is open for writing while other callers keep issuing I/O: writes
/// pause (they wait, they do not fail), the image checkpoints, the offline editor runs on the
/// device the image holds, the engine reloads its tables, and the callers go on. qemu-img is the
/// judge of the file afterwards.
/// </summary>
public sealed class OnlineSnapshotTests : HostedImageTests
{
    private const int KiB = 1024, MiB = 1024 * KiB;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    /// <summary>
    /// A client of the open image on its own task: writes 4 KiB blocks of [start, start + blocks * 64 KiB)
    /// (one per cluster, a new pattern each round), reads each back and compares, flushes every few rounds.
    /// With <c>verify</c> off it only writes and flushes (for edits that change the disk under it).
    /// Bounded by <c>maxRounds</c>; every failure it sees is kept, none is thrown.
    /// </summary>
    private sealed class ClientLoop
    {
        private readonly object _lock = new();
        private readonly List<(int Rounds, TaskCompletionSource Done)> _waiters = [];
        private int _rounds;
        private bool _ended;

        public List<string> Errors { get; } = [];
        public Task Finished { get; private set; } = Task.CompletedTask;
        public int Rounds => Volatile.Read(ref _rounds);

        public static ClientLoop Start(Qcow2Image image, long start, int blocks, byte[]? model, bool verify, CancellationToken stop)
        {
            var loop = new ClientLoop();
            loop.Finished = Task.Run(() => loop.RunAsync(image, start, blocks, model, verify, 200_000, stop), CancellationToken.None);
            return loop;
        }

        private async Task RunAsync(Qcow2Image image, long start, int blocks, byte[]? model, bool verify, int maxRounds, CancellationToken stop)
        {
            var back = new byte[4 * KiB];
            try
            {
                for (int round = 0; round < maxRounds && !stop.IsCancellationRequested; round++)
                {
                    long offset = start + (long)(round * 7 % blocks) * 64 * KiB;
                    var data = Fill(4 * KiB, (byte)(round % 251 + 1));
                    // The stop token ends the loop between rounds; it never cancels a request.
                    await image.WriteAsync(offset, data, cancellationToken: CancellationToken.None);
                    if (verify)
                    {
                        await image.ReadAsync(offset, back, CancellationToken.None);
                        if (!back.AsSpan().SequenceEqual(data)) Errors.Add($"round {round}: read back other bytes at {offset}");
                    }
                    if (model is not null) data.CopyTo(model, offset);
                    if (round % 8 == 7) await image.FlushAsync(CancellationToken.None);
                    Advance(round + 1);
                }
            }
            catch (Exception ex)
            {
                Errors.Add($"{ex.GetType().Name}: {ex.Message}");
            }
            finally
            {
                End();
            }
        }

        private void Advance(int rounds)
        {
            Volatile.Write(ref _rounds, rounds);
            lock (_lock)
            {
                foreach (var w in _waiters.Where(w => w.Rounds <= rounds).ToList())
                {
                    w.Done.TrySetResult();
                    _waiters.Remove(w);
                }
            }
        }

        private void End()
        {
            lock (_lock)
            {
                _ended = true;
                foreach (var w in _waiters) w.Done.TrySetException(new InvalidOperationException($"the client loop ended after {Rounds} rounds: {string.Join("; ", Errors)}"));
                _waiters.Clear();
            }
        }

        /// <summary>Completes once the loop has done <paramref name="more"/> rounds beyond now (the edits then overlap its I/O).</summary>
        public Task MoreRounds(int more)
        {
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_lock)
            {
                if (_ended) tcs.TrySetException(new InvalidOperationException($"the client loop ended: {string.Join("; ", Errors)}"));
                else _waiters.Add((Rounds + more, tcs));
            }
            return tcs.Task.WaitAsync(Timeout);
        }
    }

    private static JsonElement QemuCheckJson(string path)
    {
        var r = QemuTools.QemuImg("check", "--output=json", path);
        Assert.True(r.ExitCode == 0, $"qemu-img check: {r.StdOut}{r.StdErr}");
        return JsonDocument.Parse(r.StdOut).RootElement;
    }

    private static void AssertSnapshotReads(string path, string snapshot, string scratch, params string[] reads)
    {
        var copy = Path.Combine(scratch, $"{snapshot}.qcow2");
        QemuTools.QemuImg("convert", "-f", "qcow2", "-O", "qcow2", "-l", $"snapshot.name={snapshot}", path, copy).EnsureSuccess();
        var r = QemuTools.QemuIo([.. reads.SelectMany(c => new[] { "-c", c }), "-r", copy]);
        Assert.True(r.ExitCode == 0 && !r.StdOut.Contains("Pattern verification failed", StringComparison.Ordinal),
            $"snapshot {snapshot}: {r.StdOut}{r.StdErr}");
    }

    [QemuFact]
    public async Task Create_list_delete_and_check_while_a_writer_runs_cost_it_nothing()
    {
        var path = Dir.File("online.qcow2");
        var model = new byte[8 * MiB];
        var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length });
        CheckResult check;
        using (var stop = new CancellationTokenSource())
        {
            await image.WriteAsync(0, Fill(MiB, 0x11));
            Fill(MiB, 0x11).CopyTo(model, 0);
            await image.FlushAsync();
            var writer = ClientLoop.Start(image, 2 * MiB, 64, model, verify: true, stop.Token);

            await writer.MoreRounds(20);
            var s1 = await image.CreateSnapshotAsync("s1").AsTask().WaitAsync(Timeout);
            await writer.MoreRounds(20);
            await image.WriteAsync(0, Fill(512 * KiB, 0x22));
            Fill(512 * KiB, 0x22).CopyTo(model, 0);
            var tmp = await image.CreateSnapshotAsync("tmp").AsTask().WaitAsync(Timeout);
            await writer.MoreRounds(20);

            Assert.Equal(("1", "s1", 8L * MiB), (s1.Id, s1.Name, s1.DiskSize));
            Assert.Equal(["s1", "tmp"], (await image.ListSnapshotsAsync()).Select(s => s.Name));
            Assert.Equal(["1", "2"], image.Info.Snapshots.Select(s => s.Id));
            Assert.Equal(SnapshotEditException.ExistsCode, (await Assert.ThrowsAsync<SnapshotEditException>(() => image.CreateSnapshotAsync("s1").AsTask())).Code);
            Assert.Equal(SnapshotEditException.BadNameCode, (await Assert.ThrowsAsync<SnapshotEditException>(() => image.CreateSnapshotAsync("").AsTask())).Code);
            Assert.Equal(SnapshotEditException.NotFoundCode, (await Assert.ThrowsAsync<SnapshotEditException>(() => image.DeleteSnapshotAsync("nope").AsTask())).Code);

            var checkedWhileWriting = await image.CheckAsync().AsTask().WaitAsync(Timeout);
            Assert.True(checkedWhileWriting is { Corruptions: 0, Leaks: 0, CheckErrors: 0 }, string.Join("; ", checkedWhileWriting.Messages));
            var deleted = await image.DeleteSnapshotAsync(tmp.Id).AsTask().WaitAsync(Timeout);
            Assert.Equal("tmp", deleted.Name);
            await writer.MoreRounds(20);
            Assert.Equal(["s1"], (await image.ListSnapshotsAsync()).Select(s => s.Name));

            await stop.CancelAsync();
            await writer.Finished.WaitAsync(Timeout);
            Assert.Empty(writer.Errors);
            check = await image.CheckAsync();
        }
        await image.DisposeAsync();

        var listed = QemuTools.QemuImg("snapshot", "-l", path).EnsureSuccess().StdOut;
        Assert.Contains(" s1 ", listed, StringComparison.Ordinal);
        Assert.DoesNotContain("tmp", listed, StringComparison.Ordinal);
        var qemuCheck = QemuCheckJson(path);
        Assert.Equal(check.AllocatedClusters, qemuCheck.GetProperty("allocated-clusters").GetInt64());
        Assert.Equal(check.TotalClusters, qemuCheck.GetProperty("total-clusters").GetInt64());
        Assert.Equal((0L, 0L), (check.Corruptions, check.Leaks));
        QemuTools.AssertSameContent(path, model, Dir.Path);
        AssertSnapshotReads(path, "s1", Dir.Path, "read -P 0x11 0 1M", "read -P 0 1M 1M");
    }

    [QemuFact]
    public async Task Apply_while_clients_run_brings_back_the_old_content_and_size()
    {
        var path = Dir.File("apply.qcow2");
        // A v2 image: it holds the dirty bit during the edit as v3 and goes back to v2 afterwards.
        await using var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 8 * MiB, Version = 2 });
        await image.WriteAsync(0, Fill(MiB, 0x11));
        var snap = await image.CreateSnapshotAsync("base");
        await image.WriteAsync(0, Fill(MiB, 0x22));
        await image.ResizeAsync(16 * MiB);
        await image.WriteAsync(12 * MiB, Fill(64 * KiB, 0x33));
        Assert.Equal(16L * MiB, image.Info.VirtualSize);

        using var stop = new CancellationTokenSource();
        // A reader of [0, 1M): every read is all old or all new content, never a mix, never an error.
        var torn = new List<string>();
        var reader = Task.Run(async () =>
        {
            var buffer = new byte[64 * KiB];
            for (int i = 0; i < 200_000 && !stop.IsCancellationRequested; i++)
            {
                try
                {
                    await image.ReadAsync(i % 16 * 64L * KiB, buffer);
                }
                catch (Exception ex)
                {
                    torn.Add($"{ex.GetType().Name}: {ex.Message}");
                    return;
                }
                if (!(buffer.AsSpan().IndexOfAnyExcept((byte)0x11) < 0 || buffer.AsSpan().IndexOfAnyExcept((byte)0x22) < 0))
                    torn.Add($"read {i} mixes old and new content");
            }
        });
        var writer = ClientLoop.Start(image, 2 * MiB, 32, model: null, verify: false, stop.Token);
        await writer.MoreRounds(20);
        var applied = await image.ApplySnapshotAsync(snap.Name).AsTask().WaitAsync(Timeout);
        await writer.MoreRounds(20);
        await stop.CancelAsync();
        await Task.WhenAll(reader, writer.Finished).WaitAsync(Timeout);
        Assert.Empty(writer.Errors);
        Assert.Empty(torn);

        Assert.Equal("1", applied.Id);
        Assert.Equal(8L * MiB, image.VirtualSize);
        Assert.Equal(8L * MiB, image.Info.VirtualSize);
        var back = new byte[MiB];
        await image.ReadAsync(0, back);
        Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0x11) < 0, "reads after the apply see the snapshot's content");
        // The reverted disk shares its clusters with the snapshot: a write copies them, the snapshot keeps its own.
        await image.WriteAsync(0, Fill(64 * KiB, 0x44));
        Assert.Equal(["base"], (await image.ListSnapshotsAsync()).Select(s => s.Name));
        await image.DisposeAsync();

        QemuTools.AssertCheckClean(path);
        var io = QemuTools.QemuIo("-r", "-c", "read -P 0x44 0 64k", "-c", "read -P 0x11 64k 960k", path);
        Assert.True(io.ExitCode == 0 && !io.StdOut.Contains("Pattern verification failed", StringComparison.Ordinal), io.StdOut + io.StdErr);
        var info = QemuTools.QemuImg("info", path).StdOut;
        Assert.Contains("virtual size: 8 MiB", info, StringComparison.Ordinal);
        Assert.Contains("compat: 0.10", info, StringComparison.Ordinal);
        AssertSnapshotReads(path, "base", Dir.Path, "read -P 0x11 0 1M");
    }

    [QemuFact]
    public async Task A_read_only_image_lists_and_checks_but_refuses_edits_in_one_line()
    {
        var path = Dir.File("ro.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", path, "4M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 5 0 128k", path).EnsureSuccess();
        QemuTools.QemuImg("snapshot", "-c", "made-by-qemu", path).EnsureSuccess();
        await using var image = await Qcow2Image.OpenAsync(path);
        Assert.Equal(["made-by-qemu"], (await image.ListSnapshotsAsync()).Select(s => s.Name));
        var check = await image.CheckAsync();
        Assert.Equal((0L, 0L, 0L), (check.Corruptions, check.Leaks, check.CheckErrors));
        var refused = await Assert.ThrowsAsync<SnapshotEditException>(() => image.CreateSnapshotAsync("x").AsTask());
        Assert.Equal(SnapshotEditException.RefusedCode, refused.Code);
        Assert.Contains("open read-only", refused.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', refused.Message);
        await Assert.ThrowsAsync<SnapshotEditException>(() => image.ApplySnapshotAsync("made-by-qemu").AsTask());
        await Assert.ThrowsAsync<SnapshotEditException>(() => image.DeleteSnapshotAsync("made-by-qemu").AsTask());
    }

    [QemuFact]
    public async Task A_write_in_flight_lands_in_the_snapshot_and_a_read_that_arrives_meanwhile_waits_for_it()
    {
        var (image, hold, path) = await OpenWithWriteHoldAsync("inflight.qcow2", 0x01);

        hold.Armed = true;
        var inFlight = image.WriteAsync(0, Fill(4 * KiB, 0x02)).AsTask(); // an owned cluster: straight to the device
        await hold.Arrived.Task.WaitAsync(Timeout);
        var snapshot = image.CreateSnapshotAsync("s").AsTask();
        await image.EditHoldingRequests.WaitAsync(Timeout); // the edit closes the gate
        var back = new byte[4 * KiB];
        var arriving = image.ReadAsync(0, back).AsTask();
        Assert.False(snapshot.IsCompleted, "the edit waits for the write in flight");
        Assert.False(arriving.IsCompleted, "a request arriving during the edit waits");

        hold.Release.TrySetResult();
        await Task.WhenAll(inFlight, snapshot, arriving).WaitAsync(Timeout);
        Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0x02) < 0);
        await image.WriteAsync(0, Fill(4 * KiB, 0x03)); // after the snapshot: copied, the snapshot keeps 0x02
        await image.DisposeAsync();

        QemuTools.AssertCheckClean(path);
        AssertSnapshotReads(path, "s", Dir.Path, "read -P 0x02 0 4k", "read -P 0x01 4k 60k");
        var io = QemuTools.QemuIo("-r", "-c", "read -P 0x03 0 4k", path);
        Assert.True(io.ExitCode == 0 && !io.StdOut.Contains("Pattern verification failed", StringComparison.Ordinal), io.StdOut + io.StdErr);
    }

    /// <summary>
    /// Arms itself when the header gets the online edit's dirty bit alone (bit 0 without our
    /// journal-pending bit 63), then fails the <c>failAt</c>-th write after that and every later one:
    /// the file keeps what landed before, as a crash at that point would leave it.
    /// </summary>
    private sealed class CrashDuringEdit(IBlockDevice inner, int failAt, List<string> log) : DelegatingDevice(inner)
    {
        private const int IncompatibleFeaturesOffset = 72;
        private int _writesSinceMark = -1;

        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            if (_writesSinceMark >= 0 && ++_writesSinceMark >= failAt)
                return ValueTask.FromException(new IOException($"simulated crash at write {_writesSinceMark} of the edit"));
            if (_writesSinceMark >= 0) lock (log) log.Add($"{_writesSinceMark}: {offset}+{buffer.Length}");
            if (offset == 0 && buffer.Length >= IncompatibleFeaturesOffset + 8)
            {
                ulong bits = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(buffer.Span[IncompatibleFeaturesOffset..]);
                if (_writesSinceMark < 0 && (bits & 1) != 0 && (bits >> 63) == 0) _writesSinceMark = 0;
            }
            return base.WriteCoreAsync(buffer, offset, cancellationToken);
        }
    }

    // The edit's writes on this image: 1 snapshot L1, 2 refcount block (increments), 3 L2 table (COPIED
    // cleared), 4 active L1, 5 snapshot table, 6 header switch, 7 clean mark. Crashing before 6 leaves
    // raised refcounts and missing COPIED flags without the snapshot (qemu-img check alone would call
    // the flags corrupt); at 7 the snapshot is in and only the dirty bit is left.
    [QemuTheory]
    [InlineData(1, false)]
    [InlineData(3, false)]
    [InlineData(6, false)]
    [InlineData(7, true)]
    public async Task A_crash_during_an_online_create_leaves_an_image_that_opens_and_checks_clean(int failAt, bool snapshotThere)
    {
        var path = Dir.File($"crash{failAt}.qcow2");
        var log = new List<string>();
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, writable) => new CrashDuringEdit(FileBlockDevice.Open(p, writable), failAt, log),
        };
        await (await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 4 * MiB, ClusterSize = 4096 })).DisposeAsync();
        var image = await Host.OpenAsync(path, options);
        await image.WriteAsync(0, Fill(256 * KiB, 0x5a));
        await image.FlushAsync();
        await image.WriteAsync(MiB, Fill(64 * KiB, 0x6b)); // unflushed: the checkpoint before the edit writes it
        await Assert.ThrowsAnyAsync<IOException>(() => image.CreateSnapshotAsync("s").AsTask().WaitAsync(Timeout));
        Assert.True(image.IsReadOnly);
        Assert.Equal(failAt - 1, log.Count);
        await image.DisposeAsync();
        if (failAt is 3 or 6)
        {
            var asLeft = QemuTools.QemuImg("check", path);
            Assert.True(asLeft.ExitCode != 0, "the crash state is one the next open has to repair: " + asLeft.StdOut);
        }

        // The next write open repairs whatever the edit left (its dirty bit says so); the snapshot is all there or absent.
        await using (var reopened = await Host.OpenAsync(path))
        {
                Assert.Equal(snapshotThere ? ["s"] : [], (await reopened.ListSnapshotsAsync()).Select(e => e.Name));
            var back = new byte[256 * KiB];
            await reopened.ReadAsync(0, back);
            Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0x5a) < 0, "flushed data survives");
        }
        QemuTools.AssertCheckClean(path);
        if (snapshotThere) AssertSnapshotReads(path, "s", Dir.Path, "read -P 0x5a 0 256k");
    }
}
