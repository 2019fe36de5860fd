using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// <see cref="Qcow2Image.WriteInlineAsync"/>: from a thread that may wait on the device, an allocating write whose table
/// actor has nothing else to do runs on that thread (no hand-off to the pool) and is complete on return; a table actor
/// that is busy gets the write in its mailbox as usual, and the caller goes on.
/// </summary>
public sealed class Qcow2ImageInlineWriteTests : IDisposable
{
    private const int ClusterSize = 4096;
    // With 4 KiB clusters an L2 table maps 512 clusters: 2 MiB of guest space.
    private const long TableSpan = 512L * ClusterSize;
    private const string Hocon = "qcow2actors.engine.checkpoint-interval = 0s";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task Allocating_writes_to_an_idle_table_actor_run_on_the_calling_thread_and_are_complete_on_return()
    {
        var path = _dir.File("inline.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 2 * TableSpan, ClusterSize = ClusterSize });
        var device = (ThreadRecordingDevice?)null;
        var options = new Qcow2OpenOptions { ReadOnly = false, DeviceFactory = (p, w) => device = new ThreadRecordingDevice(FileBlockDevice.Open(p, w)) };
        await using (var host = ImageHost.Create(Hocon))
        await using (var image = await host.OpenAsync(path, options))
        {
            await image.WriteAsync(0, Pattern(1)); // starts the table actor; later writes may reach it directly

            // On a thread of the test's own, as an NBD connection's receive thread.
            var outcome = await OnOwnThreadAsync(() =>
            {
                int me = Environment.CurrentManagedThreadId;
                // The actor may still be finishing the first write on a pool thread (its mailbox is then taken): the
                // first write that finds it idle runs here, and from then on it is idle whenever this thread writes.
                int slot = 1;
                for (; slot < 100; slot++)
                {
                    var attempt = image.WriteInlineAsync(slot * ClusterSize, Pattern(slot + 1));
                    attempt.AsTask().Wait(Bound);
                    if (device!.WroteOn(slot + 1) == me) break;
                }
                var results = new List<(bool Complete, int Thread)>();
                for (int k = slot + 1; k <= slot + 8; k++)
                {
                    var write = image.WriteInlineAsync(k * ClusterSize, Pattern(k + 1));
                    results.Add((write.IsCompletedSuccessfully, device!.WroteOn(k + 1)));
                    write.AsTask().Wait(Bound);
                }
                return (Slot: slot, Me: me, Results: results);
            });

            Assert.True(outcome.Slot < 100, "no write ran its table actor on the calling thread");
            Assert.All(outcome.Results, r => Assert.True(r.Complete && r.Thread == outcome.Me,
                $"complete on return: {r.Complete}; written on thread {r.Thread}, the caller is {outcome.Me}"));
            for (int k = 0; k <= outcome.Slot + 8; k++)
            {
                var back = new byte[ClusterSize];
                await image.ReadAsync(k * ClusterSize, back);
                Assert.Equal(Pattern(k + 1), back);
            }
        }
        QemuTools.AssertCheckClean(path);
    }

    [QemuFact]
    public async Task A_write_to_a_table_actor_busy_on_the_device_queues_behind_it_and_the_caller_goes_on()
    {
        var path = _dir.File("busy.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 2 * TableSpan, ClusterSize = ClusterSize });
        var device = (ThreadRecordingDevice?)null;
        var options = new Qcow2OpenOptions { ReadOnly = false, DeviceFactory = (p, w) => device = new ThreadRecordingDevice(FileBlockDevice.Open(p, w)) };
        await using (var host = ImageHost.Create(Hocon))
        await using (var image = await host.OpenAsync(path, options))
        {
            await image.WriteAsync(0, Pattern(1));
            device!.Hold(); // every device write now waits for Release, on its own thread
            var first = image.WriteAsync(ClusterSize, Pattern(2)); // the table actor takes it on a pool thread and waits on the device
            await device.Held.Task.WaitAsync(Bound);

            var (complete, blockedCaller) = await OnOwnThreadAsync(() =>
            {
                var second = image.WriteInlineAsync(2 * ClusterSize, Pattern(3));
                return (second.IsCompleted, device.HeldThread == Environment.CurrentManagedThreadId);
            });
            Assert.False(blockedCaller, "the caller ran the busy table actor's write");
            Assert.False(complete, "a write queued behind a held one was complete on return");
            device.Release();
            await first.AsTask().WaitAsync(Bound);
            for (int k = 0; k < 3; k++)
            {
                var back = new byte[ClusterSize];
                await image.ReadAsync(k * ClusterSize, back).AsTask().WaitAsync(Bound);
                Assert.Equal(Pattern(k + 1), back);
            }
        }
        QemuTools.AssertCheckClean(path);
    }

    [QemuFact]
    public async Task A_write_across_two_tables_runs_the_first_tables_actor_before_it_writes_the_second()
    {
        var path = _dir.File("span.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 2 * TableSpan, ClusterSize = ClusterSize });
        var device = (ThreadRecordingDevice?)null;
        var options = new Qcow2OpenOptions { ReadOnly = false, DeviceFactory = (p, w) => device = new ThreadRecordingDevice(FileBlockDevice.Open(p, w)) };
        await using (var host = ImageHost.Create(Hocon))
        await using (var image = await host.OpenAsync(path, options))
        {
            await image.WriteAsync(0, Pattern(1)); // table 0's actor is live
            await image.WriteAsync(TableSpan, Pattern(2)); // table 1's first cluster is the image's own: overwritten in place
            device!.HoldFill = 4; // the in-place half of the spanning write waits on the device, on the caller's thread

            var span = new byte[2 * ClusterSize];
            span.AsSpan(0, ClusterSize).Fill(3);
            span.AsSpan(ClusterSize).Fill(4);
            var spanning = OnOwnThreadAsync(() =>
            {
                image.WriteInlineAsync(TableSpan - ClusterSize, span).AsTask().Wait(Bound);
                return true;
            });
            await device.Held.Task.WaitAsync(Bound);

            // The caller is held inside the second table's write; table 0's actor must not be held with it.
            await image.WriteAsync(ClusterSize, Pattern(5)).AsTask().WaitAsync(Bound);
            Assert.False(spanning.IsCompleted);
            device.Release();
            Assert.True(await spanning);
            var back = new byte[ClusterSize];
            foreach (var (offset, fill) in new[] { (0L, 1), (ClusterSize, 5), (TableSpan - ClusterSize, 3), (TableSpan, 4) })
            {
                await image.ReadAsync(offset, back);
                Assert.Equal(Pattern(fill), back);
            }
        }
        QemuTools.AssertCheckClean(path);
    }

    private static byte[] Pattern(int value) => Enumerable.Repeat((byte)value, ClusterSize).ToArray();

    /// <summary>Runs <paramref name="work"/> on a new thread (not a pool thread) and returns its result.</summary>
    private static Task<T> OnOwnThreadAsync<T>(Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try { done.SetResult(work()); }
            catch (Exception ex) { done.SetException(ex); }
        }) { IsBackground = true };
        thread.Start();
        return done.Task.WaitAsync(Bound);
    }

    /// <summary>
    /// Notes the thread of each whole-cluster write by its fill byte (the tests give every cluster its own), and can hold
    /// writes until released (at most <see cref="Bound"/>).
    /// </summary>
    private sealed class ThreadRecordingDevice(IBlockDevice inner) : DelegatingDevice(inner)
    {
        private readonly int[] _threadOf = new int[256];
        private readonly ManualResetEventSlim _open = new(true);
        private readonly ManualResetEventSlim _released = new(false);
        private int _heldOnce;
        public TaskCompletionSource Held { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public volatile int HeldThread;

        public int WroteOn(int fill) => Volatile.Read(ref _threadOf[fill]);

        /// <summary>With <see cref="Hold"/> not called: hold only the writes of this fill byte (0: none).</summary>
        public volatile int HoldFill;

        public void Hold() => _open.Reset();

        public void Release()
        {
            _open.Set();
            _released.Set();
        }

        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            if (buffer.Length == ClusterSize && buffer.Span[0] != 0 && !buffer.Span.ContainsAnyExcept(buffer.Span[0]))
                Volatile.Write(ref _threadOf[buffer.Span[0]], Environment.CurrentManagedThreadId);
            bool all = !_open.IsSet;
            if (all || (HoldFill != 0 && buffer.Span[0] == HoldFill && Interlocked.Exchange(ref _heldOnce, 1) == 0))
            {
                HeldThread = Environment.CurrentManagedThreadId;
                Held.TrySetResult();
                (all ? _open : _released).Wait(Bound, CancellationToken.None);
            }
            return base.WriteCoreAsync(buffer, offset, cancellationToken);
        }
    }
}
