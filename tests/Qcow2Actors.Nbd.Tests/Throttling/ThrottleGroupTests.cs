using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Throttling;

namespace Qcow2Actors.Nbd.Tests.Throttling;

/// <summary>QEMU's throttle-group semantics on simulated time: rates, bursts, splits, sharing, run-time changes.</summary>
public sealed class ThrottleGroupTests
{
    private const int MiB = 1024 * 1024;
    private static readonly TimeSpan Second = TimeSpan.FromSeconds(1);

    private static ThrottledExport Throttled(string name, params ThrottleGroup[] groups) => new(new MemoryExport(name, 16 * MiB), groups);

    /// <summary>True when the call completed without waiting (and consumes it).</summary>
    private static bool AtOnce(ValueTask call)
    {
        var done = call.IsCompletedSuccessfully;
        if (!done) _ = call.AsTask();
        return done;
    }

    private static bool AtOnce<T>(ValueTask<T> call) => AtOnce(call.IsCompletedSuccessfully ? ValueTask.CompletedTask : new ValueTask(call.AsTask()));

    /// <summary>Asserts <paramref name="actual"/> is within 1% of <paramref name="expected"/>.</summary>
    private static void AssertWithinOnePercent(double expected, double actual, string what) =>
        Assert.True(Math.Abs(actual - expected) <= expected / 100, $"{what}: {actual}, expected {expected} ± 1%");

    [Fact]
    public async Task A_write_admitted_at_once_reaches_the_inner_exports_inline_write_and_a_delayed_one_its_ordinary_write()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 1 }, time);
        var inner = new InlineNotingExport(new MemoryExport("a", MiB));
        using var export = new ThrottledExport(inner, group);
        INbdExport throttled = export;

        Assert.True(AtOnce(throttled.WriteInlineAsync(0, new byte[512], default)));
        Assert.Equal((1, 0), (inner.Inline, inner.Ordinary));

        var delayed = throttled.WriteInlineAsync(512, new byte[512], default).AsTask(); // over the rate: waits for its share
        Assert.False(delayed.IsCompleted);
        time.Advance(Second);
        await delayed.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal((1, 1), (inner.Inline, inner.Ordinary));
    }

    /// <summary>Counts the writes that reached <see cref="INbdExport.WriteInlineAsync"/> and <see cref="INbdExport.WriteAsync"/>.</summary>
    private sealed class InlineNotingExport(INbdExport inner) : DelegatingExport(inner), INbdExport
    {
        public int Inline;
        public int Ordinary;

        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Ordinary);
            return base.WriteAsync(offset, data, fua, cancellationToken);
        }

        public ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Inline);
            return base.WriteAsync(offset, data, fua: false, cancellationToken);
        }
    }

    [Fact]
    public async Task An_iops_limit_holds_the_rate_within_one_percent_over_simulated_seconds()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 100 }, time);
        using var export = Throttled("a", group);
        await using var clients = new SimulatedClients(time, group);
        int[] all = [clients.Start(export), clients.Start(export), clients.Start(export), clients.Start(export)];

        await clients.AdvanceAsync(Second);
        var before = clients.Count(all);
        await clients.AdvanceAsync(10 * Second);
        AssertWithinOnePercent(1000, clients.Count(all) - before, "requests in 10 s at 100 IOPS");
    }

    [Fact]
    public async Task A_bps_limit_holds_the_byte_rate_within_one_percent()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Bps = MiB }, time);
        using var export = Throttled("a", group);
        await using var clients = new SimulatedClients(time, group);
        int[] all = [clients.Start(export, size: 4096), clients.Start(export, write: true, size: 4096)];

        await clients.AdvanceAsync(Second);
        var before = clients.Count(all);
        await clients.AdvanceAsync(10 * Second);
        AssertWithinOnePercent(10.0 * MiB, (clients.Count(all) - before) * 4096.0, "bytes in 10 s at 1 MiB/s");
    }

    [Fact]
    public async Task A_burst_runs_at_the_burst_rate_for_its_length_then_at_the_steady_rate()
    {
        var time = new FakeTimeProvider();
        var limits = new ThrottleLimits { Iops = 100, BurstIops = 1000, BurstLength = TimeSpan.FromSeconds(2) };
        using var group = new ThrottleGroup("g", limits, time);
        using var export = Throttled("a", group);
        await using var clients = new SimulatedClients(time, group);
        int[] all = Enumerable.Range(0, 8).Select(_ => clients.Start(export)).ToArray();

        await clients.AdvanceAsync(2 * Second);
        // 1,000/s for 2 s, plus the tenth of a second the burst bucket lets through at once.
        var burst = clients.Count(all);
        Assert.InRange(burst, 2000, 2150);

        await clients.AdvanceAsync(3 * Second); // the bucket fills up at 900/s net, a little after 2 s
        var before = clients.Count(all);
        await clients.AdvanceAsync(10 * Second);
        AssertWithinOnePercent(1000, clients.Count(all) - before, "requests in 10 s after the burst");
    }

    [Fact]
    public async Task Read_and_write_limits_apply_to_their_own_direction()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { ReadIops = 100, WriteIops = 50 }, time);
        using var export = Throttled("a", group);
        await using var clients = new SimulatedClients(time, group);
        int[] readers = [clients.Start(export), clients.Start(export), clients.Start(export)];
        int[] writers = [clients.Start(export, write: true), clients.Start(export, write: true), clients.Start(export, write: true)];

        await clients.AdvanceAsync(Second);
        var (reads, writes) = (clients.Count(readers), clients.Count(writers));
        await clients.AdvanceAsync(10 * Second);
        AssertWithinOnePercent(1000, clients.Count(readers) - reads, "reads in 10 s at 100 read IOPS");
        AssertWithinOnePercent(500, clients.Count(writers) - writes, "writes in 10 s at 50 write IOPS");
    }

    [Fact]
    public async Task A_total_limit_is_shared_by_reads_and_writes_without_starving_either()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 100 }, time);
        using var export = Throttled("a", group);
        await using var clients = new SimulatedClients(time, group);
        int[] readers = Enumerable.Range(0, 6).Select(_ => clients.Start(export)).ToArray();
        int[] writers = [clients.Start(export, write: true)];

        await clients.AdvanceAsync(Second);
        var (reads, writes) = (clients.Count(readers), clients.Count(writers));
        await clients.AdvanceAsync(10 * Second);
        // Six readers against one writer still alternate: each direction gets half.
        AssertWithinOnePercent(500, clients.Count(readers) - reads, "reads in 10 s");
        AssertWithinOnePercent(500, clients.Count(writers) - writes, "writes in 10 s");
    }

    [Fact]
    public async Task A_group_shared_by_two_exports_splits_fairly_between_them()
    {
        var time = new FakeTimeProvider();
        using var tenant = new ThrottleGroup("tenant", new ThrottleLimits { Iops = 100 }, time);
        using var quiet = Throttled("quiet", tenant);
        using var busy = Throttled("busy", tenant);
        await using var clients = new SimulatedClients(time, tenant);
        int[] one = [clients.Start(quiet)];
        int[] eight = Enumerable.Range(0, 8).Select(_ => clients.Start(busy)).ToArray();

        await clients.AdvanceAsync(Second);
        var (a, b) = (clients.Count(one), clients.Count(eight));
        await clients.AdvanceAsync(10 * Second);
        AssertWithinOnePercent(500, clients.Count(one) - a, "requests of the export with one client");
        AssertWithinOnePercent(500, clients.Count(eight) - b, "requests of the export with eight clients");
    }

    [Fact]
    public async Task Two_groups_on_one_export_both_apply()
    {
        var time = new FakeTimeProvider();
        using var own = new ThrottleGroup("export", new ThrottleLimits { Iops = 300 }, time);
        using var tenant = new ThrottleGroup("tenant", new ThrottleLimits { Iops = 100 }, time);
        using var export = Throttled("a", own, tenant);
        await using var clients = new SimulatedClients(time, own, tenant);
        int[] all = [clients.Start(export), clients.Start(export), clients.Start(export)];

        await clients.AdvanceAsync(Second);
        var before = clients.Count(all);
        await clients.AdvanceAsync(10 * Second);
        AssertWithinOnePercent(1000, clients.Count(all) - before, "requests under the tighter of two groups");
    }

    [Fact]
    public async Task Update_changes_the_rate_of_connected_clients()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 100 }, time);
        using var export = Throttled("a", group);
        await using var clients = new SimulatedClients(time, group);
        int[] all = [clients.Start(export), clients.Start(export), clients.Start(export), clients.Start(export)];

        await clients.AdvanceAsync(Second);
        var before = clients.Count(all);
        await clients.AdvanceAsync(5 * Second);
        AssertWithinOnePercent(500, clients.Count(all) - before, "requests in 5 s at 100 IOPS");

        group.Update(new ThrottleLimits { Iops = 300 });
        await clients.AdvanceAsync(Second);
        before = clients.Count(all);
        await clients.AdvanceAsync(5 * Second);
        AssertWithinOnePercent(1500, clients.Count(all) - before, "requests in 5 s after raising the limit to 300 IOPS");
        Assert.Equal(300, group.Limits.Iops);
    }

    [Fact]
    public async Task Update_releases_waiting_requests_at_once_when_the_limit_is_lifted()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 1 }, time);
        using var export = Throttled("a", group);
        var buffer = new byte[512];
        Assert.True(AtOnce(export.ReadAsync(0, buffer, default)));
        var waiting = export.ReadAsync(0, buffer, default).AsTask();
        Assert.False(waiting.IsCompleted);
        Assert.Equal(1, group.QueuedRequests);

        group.Update(ThrottleLimits.Unlimited);
        await waiting.WaitAsync(TimeSpan.FromSeconds(10)); // no simulated time passes
        Assert.Equal(0, group.QueuedRequests);
    }

    [Fact]
    public async Task A_request_larger_than_the_bucket_proceeds_and_delays_the_next_one()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Bps = MiB }, time);
        using var export = Throttled("a", group);

        Assert.True(AtOnce(export.WriteAsync(0, new byte[8 * MiB], false, default)));
        var next = export.WriteAsync(0, new byte[4096], false, default).AsTask();
        // 8 MiB charged against 1 MiB/s, of which a tenth of a second may be outstanding: 7.9 s.
        time.Advance(TimeSpan.FromSeconds(7.89));
        Assert.False(next.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(0.02));
        await next.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Cancelling_a_waiting_request_dequeues_it_and_charges_nothing()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 1 }, time);
        using var export = Throttled("a", group);
        var buffer = new byte[512];
        Assert.True(AtOnce(export.ReadAsync(0, buffer, default)));

        using var cancel = new CancellationTokenSource();
        var waiting = export.ReadAsync(0, buffer, cancel.Token).AsTask();
        Assert.Equal(1, group.QueuedRequests);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        Assert.Equal(0, group.QueuedRequests);

        // Had the cancelled request been charged, the next one would still wait after a second.
        time.Advance(Second);
        Assert.True(AtOnce(export.ReadAsync(0, buffer, default)));
    }

    [Fact]
    public async Task SetGroups_moves_waiting_requests_to_the_new_groups_without_reconnecting()
    {
        var time = new FakeTimeProvider();
        using var slow = new ThrottleGroup("slow", new ThrottleLimits { Iops = 1 }, time);
        using var fast = new ThrottleGroup("fast", new ThrottleLimits { Iops = 1000 }, time);
        using var export = Throttled("a", slow);
        var buffer = new byte[512];
        Assert.True(AtOnce(export.ReadAsync(0, buffer, default)));
        var waiting = export.ReadAsync(0, buffer, default).AsTask();
        Assert.Equal(1, slow.QueuedRequests);

        export.SetGroups(fast);
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0, slow.QueuedRequests);
        Assert.Equal([fast], export.Groups);
        Assert.True(AtOnce(export.ReadAsync(0, buffer, default)));
    }

    [Fact]
    public async Task Flush_and_block_status_pass_while_reads_and_writes_wait()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 1 }, time);
        using var export = Throttled("a", group);
        Assert.True(AtOnce(export.WriteAsync(0, new byte[512], false, default)));

        Assert.True(AtOnce(export.FlushAsync(default)));
        Assert.True(AtOnce(export.GetBlockStatusAsync(0, 4096, default)));
        var zeroes = export.WriteZeroesAsync(0, 4096, true, false, false, default).AsTask();
        var trim = export.TrimAsync(0, 4096, false, default).AsTask();
        Assert.False(zeroes.IsCompleted);
        Assert.False(trim.IsCompleted);
        Assert.Equal(2, group.QueuedRequests);
        time.Advance(Second); // one a second: the bucket holds no more than a tenth of a second of credit
        time.Advance(Second);
        await Task.WhenAll(zeroes, trim).WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Write_zeroes_and_trim_are_charged_their_length_in_bytes()
    {
        var time = new FakeTimeProvider();
        using var group = new ThrottleGroup("g", new ThrottleLimits { WriteBps = MiB }, time);
        using var export = Throttled("a", group);
        Assert.True(AtOnce(export.WriteZeroesAsync(0, 4 * MiB, true, false, false, default)));
        var trim = export.TrimAsync(0, 4096, false, default).AsTask();
        time.Advance(TimeSpan.FromSeconds(3.8));
        Assert.False(trim.IsCompleted); // 4 MiB of zeroes cost 3.9 s at 1 MiB/s
        time.Advance(TimeSpan.FromSeconds(0.2));
        await trim.WaitAsync(TimeSpan.FromSeconds(10));
        // Reads are not limited by a write limit.
        Assert.True(AtOnce(export.ReadAsync(0, new byte[MiB], default)));
    }

    [Fact]
    public async Task Disposing_a_group_lets_its_waiting_requests_through()
    {
        var time = new FakeTimeProvider();
        var group = new ThrottleGroup("g", new ThrottleLimits { Iops = 1 }, time);
        using var export = Throttled("a", group);
        Assert.True(AtOnce(export.ReadAsync(0, new byte[512], default)));
        var waiting = export.ReadAsync(0, new byte[512], default).AsTask();
        group.Dispose();
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Theory]
    [InlineData("iops cannot be combined with read-iops or write-iops", 100, 0, 10, 0, 0, 0, 0)]
    [InlineData("bps cannot be combined with read-bps or write-bps", 0, 100, 0, 0, 0, 10, 0)]
    [InlineData("burst-iops needs iops (or read-iops/write-iops)", 0, 0, 0, 0, 0, 0, 100)]
    [InlineData("burst-iops 50 is below iops 100", 100, 0, 0, 0, 0, 0, 50)]
    [InlineData("iops must not be negative (got -1)", -1, 0, 0, 0, 0, 0, 0)]
    public void Limits_QEMU_refuses_are_refused_with_one_line_naming_the_field(
        string message, long iops, long bps, long readIops, long writeIops, long readBps, long writeBps, long burstIops)
    {
        var limits = new ThrottleLimits
        {
            Iops = iops, Bps = bps, ReadIops = readIops, WriteIops = writeIops, ReadBps = readBps, WriteBps = writeBps, BurstIops = burstIops,
        };
        Assert.Equal(message, limits.Problem());
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => new ThrottleGroup("g", limits)).Message);
    }

    [Fact]
    public void A_burst_length_without_a_burst_rate_is_refused()
    {
        var limits = new ThrottleLimits { Iops = 10, BurstLength = TimeSpan.FromSeconds(5) };
        Assert.Equal("burst-length needs burst-iops or burst-bps", limits.Problem());
        using var group = new ThrottleGroup("g", ThrottleLimits.Unlimited);
        Assert.Throws<ArgumentException>(() => group.Update(limits));
        Assert.True(group.Limits.IsUnlimited);
    }
}
