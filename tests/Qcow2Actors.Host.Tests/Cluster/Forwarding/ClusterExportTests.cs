using System.Threading.Channels;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Host.Cluster.Forwarding;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Tests;

namespace Qcow2Actors.Host.Tests.Cluster.Forwarding;

/// <summary>
/// A node's export of a cluster image (<see cref="ClusterExport"/>) in process, its owner a scripted channel and
/// its clock a <see cref="FakeTimeProvider"/>: the disk contract across owner changes (EIO on the next flush only
/// when writes were acknowledged by an owner that ended without a clean close), the retry of a request the owner
/// did not answer, the deadline, and the hand-off that waits for requests in flight.
/// </summary>
public sealed class ClusterExportTests
{
    private const long Size = 4 << 20;
    private readonly ObservedTime _time = new();
    private readonly ScriptedOwner _owner = new();

    private ClusterExport Export(TimeSpan? backoff = null, TimeSpan? maxBackoff = null) => new("acme/disk1", "acme", Size, _owner, new ForwardingOptions
    {
        Time = _time,
        FirstBackoff = backoff ?? TimeSpan.Zero,
        MaxBackoff = maxBackoff ?? backoff ?? TimeSpan.Zero,
    }, "akka.tcp://q2a-host@127.0.0.1:1");

    private static async Task<NbdError> FlushError(ClusterExport export)
    {
        var ex = await Assert.ThrowsAsync<NbdException>(async () => await export.FlushAsync(default));
        return ex.Error;
    }

    [Fact]
    public async Task Writes_acknowledged_by_an_owner_that_died_make_the_next_flush_fail_with_EIO_once()
    {
        var export = Export();
        _owner.Life = new OwnerLife(1, 0);
        await export.WriteAsync(0, new byte[4096], fua: false, default);
        // The owner died; the next one replayed the journal: life 1 ended unclean.
        _owner.Life = new OwnerLife(2, 1);
        var buffer = new byte[4096];
        await export.ReadAsync(0, buffer, default); // reads go on, answered by the new owner
        Assert.Equal(NbdError.IoError, await FlushError(export));
        // Reported once: the client knows; later flushes cover what the new owner acknowledged.
        await export.WriteAsync(4096, new byte[4096], fua: false, default);
        await export.FlushAsync(default);
        Assert.False(export.Contract.HasUnflushed);
    }

    [Fact]
    public async Task A_loss_is_reported_to_a_flush_on_any_connection_and_to_the_connection_that_wrote()
    {
        var export = Export();
        var writer = export.ForConnection();
        var other = export.ForConnection();
        _owner.Life = new OwnerLife(1, 0);
        await other.WriteAsync(0, new byte[4096], fua: false, default);
        await other.FlushAsync(default);
        await writer.WriteAsync(4096, new byte[4096], fua: false, default);
        _owner.Life = new OwnerLife(2, 1);
        // Multi-conn: the other connection's flush vouches for the writer's write too, so it fails.
        Assert.Equal(NbdError.IoError, (await Assert.ThrowsAsync<NbdException>(async () => await other.FlushAsync(default))).Error);
        // The connection that wrote is told on its own next flush as well, once.
        Assert.Equal(NbdError.IoError, (await Assert.ThrowsAsync<NbdException>(async () => await writer.FlushAsync(default))).Error);
        await writer.FlushAsync(default);
        await other.FlushAsync(default);
        ((IDisposable)writer).Dispose();
        ((IDisposable)other).Dispose();
    }

    [Fact]
    public async Task After_a_clean_hand_off_the_flush_succeeds()
    {
        var export = Export();
        _owner.Life = new OwnerLife(1, 0);
        await export.WriteAsync(0, new byte[4096], fua: false, default);
        _owner.Life = new OwnerLife(2, 0); // life 1 was checkpointed and closed clean
        await export.FlushAsync(default);
        Assert.False(export.Contract.HasUnflushed);
    }

    [Fact]
    public async Task Writes_a_flush_covered_before_the_owner_died_are_not_reported()
    {
        var export = Export();
        _owner.Life = new OwnerLife(1, 0);
        await export.WriteAsync(0, new byte[4096], fua: false, default);
        await export.FlushAsync(default);
        _owner.Life = new OwnerLife(2, 1);
        await export.FlushAsync(default);
    }

    [Fact]
    public async Task A_crash_of_a_later_owner_is_reported_for_writes_of_an_earlier_one_not_yet_flushed()
    {
        var export = Export();
        _owner.Life = new OwnerLife(3, 0);
        await export.WriteAsync(0, new byte[4096], fua: false, default);
        // Lives 4 and 5 came and went unseen by this node; 4 crashed: whether life 3 closed clean is not known here.
        _owner.Life = new OwnerLife(6, 4);
        Assert.Equal(NbdError.IoError, await FlushError(export));
    }

    [Fact]
    public async Task A_request_the_owner_does_not_answer_is_sent_again_and_answered_by_the_next_owner()
    {
        var export = Export();
        _owner.Life = new OwnerLife(1, 0);
        _owner.Silent = 1; // the owner died with this request in flight
        var write = export.WriteAsync(0, new byte[4096], fua: false, default).AsTask();
        await _owner.Calls.Reader.ReadAsync();
        Assert.False(write.IsCompleted);
        _owner.Life = new OwnerLife(2, 1);
        _time.Advance(TimeSpan.FromSeconds(10)); // the attempt's timeout
        await write;
        Assert.Equal(2, _owner.Received);
        // Acknowledged by life 2 itself: the flush covers it, no error.
        await export.FlushAsync(default);
    }

    [Fact]
    public async Task Moved_answers_are_retried_after_a_pause_on_the_fake_clock()
    {
        var export = Export(backoff: TimeSpan.FromMilliseconds(100), maxBackoff: TimeSpan.FromMilliseconds(400));
        _owner.Life = new OwnerLife(1, 0);
        _owner.Moved = 2; // handing off: ask again
        var read = export.ReadAsync(0, new byte[512], default).AsTask();
        await _time.TimerStarted(TimeSpan.FromMilliseconds(100)); // the pause after the first "moved"
        Assert.Equal(1, _owner.Received);
        _time.Advance(TimeSpan.FromMilliseconds(99));
        Assert.Equal(1, _owner.Received);
        _time.Advance(TimeSpan.FromMilliseconds(1));
        await _time.TimerStarted(TimeSpan.FromMilliseconds(200)); // doubled after the second
        Assert.Equal(2, _owner.Received);
        Assert.False(read.IsCompleted);
        _time.Advance(TimeSpan.FromMilliseconds(200));
        await read;
        Assert.Equal(3, _owner.Received);
    }

    [Fact]
    public async Task While_the_owner_is_unreachable_the_pauses_stop_doubling_at_the_unavailable_backoff()
    {
        var export = new ClusterExport("acme/disk1", "acme", Size, _owner, new ForwardingOptions
        {
            Time = _time,
            FirstBackoff = TimeSpan.FromMilliseconds(100),
            MaxBackoff = TimeSpan.FromMilliseconds(800),
            UnavailableBackoff = TimeSpan.FromMilliseconds(150),
        }, "akka.tcp://q2a-host@127.0.0.1:1");
        _owner.Life = new OwnerLife(1, 0);
        _owner.Unavailable = 3; // the owner's node unreachable, then removed: nothing sent
        var read = export.ReadAsync(0, new byte[512], default).AsTask();
        await _time.TimerStarted(TimeSpan.FromMilliseconds(100)); // the first pause, under the cap
        _time.Advance(TimeSpan.FromMilliseconds(100));
        await _time.TimerStarted(TimeSpan.FromMilliseconds(150)); // 200 capped: the next look is local
        _time.Advance(TimeSpan.FromMilliseconds(150));
        await _time.TimerStarted(TimeSpan.FromMilliseconds(150)); // 400 capped
        Assert.False(read.IsCompleted);
        _time.Advance(TimeSpan.FromMilliseconds(150));
        await read; // the new owner answers at once, not after a doubled pause
        Assert.Equal(4, _owner.Received);
    }

    [Fact]
    public async Task A_request_no_owner_answers_within_the_deadline_fails_with_EIO()
    {
        var export = Export();
        _owner.Moved = int.MaxValue;
        _owner.AdvancePerCall = (_time, TimeSpan.FromSeconds(1));
        var ex = await Assert.ThrowsAsync<NbdException>(async () => await export.WriteAsync(0, new byte[512], fua: false, default));
        Assert.Equal(NbdError.IoError, ex.Error);
        Assert.Contains("no owner answered", ex.Message, StringComparison.Ordinal);
        Assert.InRange(_owner.Received, 30, 31);
    }

    [Fact]
    public async Task A_failure_the_owner_reports_is_passed_on_not_retried()
    {
        var export = Export();
        _owner.Fail = NbdError.NoSpace;
        var ex = await Assert.ThrowsAsync<NbdException>(async () => await export.WriteAsync(0, new byte[512], fua: false, default));
        Assert.Equal(NbdError.NoSpace, ex.Error);
        Assert.Equal(1, _owner.Received);
    }

    [Fact]
    public async Task Reads_and_writes_larger_than_a_chunk_travel_as_several_requests()
    {
        var export = Export();
        _owner.Life = new OwnerLife(1, 0);
        var data = new byte[(2 * ClusterExport.MaxChunk) + 4096];
        new Random(3).NextBytes(data);
        await export.WriteAsync(8192, data, fua: false, default);
        Assert.Equal(3, _owner.Received);
        var back = new byte[data.Length];
        await export.ReadAsync(8192, back, default);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task The_owner_serves_forwarded_requests_locally_and_a_hand_off_waits_for_those_in_flight()
    {
        var owner = Export();
        var target = new GatedExport(new MemoryExport("acme/disk1", Size));
        owner.AttachLocal(target, new OwnerLife(7, 3));
        var data = new byte[4096];
        data.AsSpan().Fill(0x5a);
        var reply = await owner.ServeForwardedAsync(new ForwardedRequest(ForwardedOp.Write, ForwardedFlags.None, 4096, data.Length, data));
        Assert.Equal(ForwardedStatus.Ok, reply.Status);
        Assert.Equal(new OwnerLife(7, 3), reply.Life);

        target.Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = owner.ServeForwardedAsync(new ForwardedRequest(ForwardedOp.Read, ForwardedFlags.None, 4096, 4096, []));
        await target.Entered.Task;
        var detached = owner.DetachLocalAsync();
        Assert.False(detached.IsCompleted); // a read still runs on the image
        var refused = await owner.ServeForwardedAsync(new ForwardedRequest(ForwardedOp.Flush, ForwardedFlags.None, 0, 0, []));
        Assert.Equal(ForwardedStatus.Moved, refused.Status);
        target.Gate.SetResult();
        Assert.Equal(data, (await running).Data);
        await detached;
    }

    [Fact]
    public void The_serializer_round_trips_requests_and_replies()
    {
        var serializer = new ForwardingSerializer(null!);
        var request = new ForwardedRequest(ForwardedOp.WriteZeroes, ForwardedFlags.Fua | ForwardedFlags.MayUnmap, 1L << 40, 65536, [1, 2, 3]);
        var back = (ForwardedRequest)serializer.FromBinary(serializer.ToBinary(request), serializer.Manifest(request));
        Assert.Equal((request.Op, request.Flags, request.Offset, request.Length), (back.Op, back.Flags, back.Offset, back.Length));
        Assert.Equal(request.Data, back.Data);
        var reply = new ForwardedReply(ForwardedStatus.Failed, new OwnerLife(9, 4), "akka.tcp://q2a-host@127.0.0.1:4053", 28, "no space é", [7, 8],
            [new NbdExtent(4096, NbdExtentFlags.Hole | NbdExtentFlags.Zero), new NbdExtent(8192, NbdExtentFlags.None)]);
        var r = (ForwardedReply)serializer.FromBinary(serializer.ToBinary(reply), serializer.Manifest(reply));
        Assert.Equal((reply.Status, reply.Life, reply.Owner, reply.Error, reply.Message), (r.Status, r.Life, r.Owner, r.Error, r.Message));
        Assert.Equal(reply.Data, r.Data);
        Assert.Equal(reply.Extents, r.Extents);
        var bad = serializer.ToBinary(request)[..10];
        Assert.Throws<System.Runtime.Serialization.SerializationException>(() => serializer.FromBinary(bad, serializer.Manifest(request)));
    }

    /// <summary>
    /// The owner as a script: a memory image answered as <see cref="Life"/>; the next <see cref="Silent"/> requests
    /// get no answer (until cancelled), the next <see cref="Moved"/> are answered "moved".
    /// </summary>
    private sealed class ScriptedOwner : IOwnerChannel
    {
        private readonly MemoryExport _image = new("image", Size);
        private int _received;

        public OwnerLife Life { get; set; }
        public int Silent { get; set; }
        public int Moved { get; set; }
        public int Unavailable { get; set; }
        public NbdError? Fail { get; set; }
        public (FakeTimeProvider Time, TimeSpan Step)? AdvancePerCall { get; set; }
        public int Received => Volatile.Read(ref _received);
        public Channel<ForwardedRequest> Calls { get; } = Channel.CreateUnbounded<ForwardedRequest>();

        public async Task<ForwardedReply> SendAsync(ForwardedRequest request, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _received);
            Calls.Writer.TryWrite(request);
            if (AdvancePerCall is { } advance) advance.Time.Advance(advance.Step);
            if (Silent > 0)
            {
                Silent--;
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            if (Unavailable > 0)
            {
                Unavailable--;
                throw new OwnerUnavailableException("owner is unreachable");
            }
            if (Moved > 0)
            {
                Moved--;
                return ForwardedReply.Moved("owner", "handing off");
            }
            if (Fail is { } fail) return new ForwardedReply(ForwardedStatus.Failed, Life, "owner", (uint)fail, "refused", [], []);
            var owner = new ClusterExport("image", "t", Size, this, new ForwardingOptions(), "owner");
            owner.AttachLocal(_image, Life);
            return await owner.ServeForwardedAsync(request);
        }
    }

    /// <summary>A fake clock that says when a timer is started (so a test advances time only once the pause is waiting).</summary>
    private sealed class ObservedTime : FakeTimeProvider
    {
        private readonly Channel<TimeSpan> _started = Channel.CreateUnbounded<TimeSpan>();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            _started.Writer.TryWrite(dueTime);
            return timer;
        }

        /// <summary>Completes once a timer due in <paramref name="due"/> has been started (skipping others).</summary>
        public async Task TimerStarted(TimeSpan due)
        {
            while (await _started.Reader.ReadAsync() != due) { }
        }
    }

    /// <summary>An export whose reads wait for <see cref="Gate"/> when one is set.</summary>
    private sealed class GatedExport(INbdExport inner) : DelegatingExport(inner)
    {
        public TaskCompletionSource? Gate { get; set; }
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public override bool IsReadOnly => false;

        public override async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            if (Gate is { } gate)
            {
                Entered.TrySetResult();
                await gate.Task;
            }
            await base.ReadAsync(offset, buffer, cancellationToken);
        }

    }
}
