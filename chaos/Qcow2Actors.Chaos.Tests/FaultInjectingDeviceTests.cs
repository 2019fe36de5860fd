using System.Diagnostics;
using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.Tests;

public class FaultInjectingDeviceTests
{
    private static readonly byte[] Block = new byte[512];

    private static FaultInjectingDevice Over(IBlockDevice inner, FaultInjectionOptions? options = null, params FaultRule[] rules) =>
        new(inner, options, rules);

    [Fact]
    public void FailNth_fails_only_the_third_write_with_EIO_in_HResult()
    {
        using var device = Over(new MemoryBlockDevice(), null, FaultRule.FailNth(FaultOperations.Write, 3));

        device.Write(Block, 0);
        device.Write(Block, 512);
        var failed = Assert.Throws<ChaosIOException>(() => device.Write(Block, 1024));
        device.Write(Block, 1536);

        Assert.Equal(Errno.EIO, failed.HResult);
        Assert.Equal(Errno.EIO, Errno.Of(failed));
        Assert.Equal(1, device.InjectedFailures);
    }

    [Fact]
    public void A_write_failed_before_the_device_leaves_nothing_behind()
    {
        var inner = new MemoryBlockDevice(new byte[1024]);
        using var device = Over(inner, null, FaultRule.FailNth(FaultOperations.Write, 1));

        Assert.Throws<ChaosIOException>(() => device.Write(new byte[] { 7 }, 0));

        Assert.Equal(0, inner.ToArray()[0]);
    }

    [Fact]
    public void FailAfterInner_lets_the_write_land_and_still_reports_failure()
    {
        var inner = new MemoryBlockDevice(new byte[1024]);
        using var device = Over(inner, null, FaultRule.FailNth(FaultOperations.Write, 1) with { FailAfterInner = true });

        Assert.Throws<ChaosIOException>(() => device.Write(new byte[] { 7 }, 0));

        Assert.Equal(7, inner.ToArray()[0]);
    }

    [Fact]
    public void FailRange_fails_only_reads_that_overlap_the_bad_region()
    {
        using var device = Over(new MemoryBlockDevice(new byte[8192]), null, FaultRule.FailRange(FaultOperations.Read, 4096, 512));

        device.Read(new byte[512], 3584);
        device.Read(new byte[512], 4608);
        Assert.Throws<ChaosIOException>(() => device.Read(new byte[1024], 3584));
        device.Write(Block, 4096);
    }

    [Fact]
    public async Task FailFrom_with_ENOSPC_fails_every_later_async_write_with_that_errno()
    {
        using var device = Over(new MemoryBlockDevice(), null, FaultRule.FailFrom(FaultOperations.Write, 2, Errno.ENOSPC));

        await device.WriteAsync(Block, 0);
        var first = await Assert.ThrowsAsync<ChaosIOException>(async () => await device.WriteAsync(Block, 512));
        var second = await Assert.ThrowsAsync<ChaosIOException>(async () => await device.WriteAsync(Block, 1024));

        Assert.Equal(Errno.ENOSPC, first.HResult);
        Assert.Equal(Errno.ENOSPC, second.HResult);
        Assert.Contains("ENOSPC", first.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_failed_flush_is_sticky_every_later_flush_fails_too()
    {
        using var device = Over(new MemoryBlockDevice(), null, FaultRule.FailNth(FaultOperations.Flush, 1));

        Assert.Throws<ChaosIOException>(device.Flush);
        device.ClearRules();
        var later = Assert.Throws<ChaosIOException>(device.Flush);

        Assert.Equal(Errno.EIO, later.HResult);
        Assert.Equal(Errno.EIO, device.FlushFailure);
        device.Write(Block, 0);
    }

    [Fact]
    public void FailWritesAfterFlushFailure_turns_the_device_read_only_in_effect()
    {
        using var device = Over(new MemoryBlockDevice(new byte[1024]), new FaultInjectionOptions { FailWritesAfterFlushFailure = true },
            FaultRule.FailNth(FaultOperations.Flush, 1));

        Assert.Throws<ChaosIOException>(device.Flush);

        Assert.Throws<ChaosIOException>(() => device.Write(Block, 0));
        Assert.Throws<ChaosIOException>(() => device.SetLength(0));
        device.Read(new byte[512], 0);
    }

    [Fact]
    public void Without_stickiness_a_later_flush_succeeds_but_the_failed_flushs_writes_are_lost_as_on_linux()
    {
        var crash = new CrashSimulatingDevice(new byte[1024]);
        using var device = Over(crash, new FaultInjectionOptions { StickyFlushFailure = false }, FaultRule.FailNth(FaultOperations.Flush, 1));
        device.Write(new byte[] { 1 }, 0);

        Assert.Throws<ChaosIOException>(device.Flush);
        device.Flush();

        Assert.Equal(1, crash.CurrentContent()[0]);
        Assert.Equal(0, crash.Crash(CrashMode.KeepAll, new Random(1)).Content[0]);
    }

    [Fact]
    public void A_real_flush_failure_from_the_inner_device_also_poisons_flushes()
    {
        var crash = new CrashSimulatingDevice(new byte[1024]);
        using var device = Over(crash);
        crash.PowerCut();

        Assert.Throws<ChaosIOException>(device.Flush);

        Assert.Equal(Errno.EIO, device.FlushFailure);
    }

    [Fact]
    public void Probabilistic_faults_replay_identically_with_the_same_seed()
    {
        static string Pattern(int seed)
        {
            using var device = Over(new MemoryBlockDevice(), new FaultInjectionOptions { Seed = seed },
                FaultRule.FailRandomly(FaultOperations.Write, 0.3));
            var chars = new char[100];
            for (var i = 0; i < chars.Length; i++)
            {
                try { device.Write(Block, 0); chars[i] = '.'; }
                catch (ChaosIOException) { chars[i] = 'X'; }
            }
            return new string(chars);
        }

        var a = Pattern(17);

        Assert.Equal(a, Pattern(17));
        Assert.InRange(a.Count(c => c == 'X'), 10, 50);
    }

    [Fact]
    public async Task Slow_delays_operations_without_failing_them()
    {
        using var device = Over(new MemoryBlockDevice(), null, FaultRule.Slow(FaultOperations.Write, TimeSpan.FromMilliseconds(60)));
        var watch = Stopwatch.StartNew();

        await device.WriteAsync(Block, 0);
        device.Write(Block, 0);

        Assert.True(watch.ElapsedMilliseconds >= 110, $"took {watch.ElapsedMilliseconds} ms");
        Assert.Equal(0, device.InjectedFailures);
    }

    [Fact]
    public void A_rule_counts_matches_from_when_it_was_added()
    {
        using var device = Over(new MemoryBlockDevice());
        device.Write(Block, 0);
        device.Write(Block, 0);

        device.AddRule(FaultRule.FailNth(FaultOperations.Write, 1));

        Assert.Throws<ChaosIOException>(() => device.Write(Block, 0));
    }

    [Fact]
    public void A_ranged_rule_never_matches_a_flush()
    {
        using var device = Over(new MemoryBlockDevice(), null, FaultRule.FailRange(FaultOperations.All, 0, 4096));

        device.Flush();

        Assert.Throws<ChaosIOException>(() => device.Write(Block, 0));
    }
}
