using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Engine.Write;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class IdleSweepTests
{
    [Fact]
    public void A_table_is_idle_once_unused_for_the_table_timeout()
    {
        var time = new FakeTimeProvider();
        var sweep = new IdleSweep(time, TimeSpan.FromSeconds(10), TimeSpan.Zero);
        sweep.Used(1);
        time.Advance(TimeSpan.FromSeconds(4));
        sweep.Used(2);
        time.Advance(TimeSpan.FromSeconds(6) - TimeSpan.FromTicks(1));
        Assert.Empty(sweep.IdleTables(sweep.Now));
        time.Advance(TimeSpan.FromTicks(1));
        Assert.Equal([1], sweep.IdleTables(sweep.Now));
        sweep.Used(1); // used again: the idle time starts over
        time.Advance(TimeSpan.FromSeconds(6));
        Assert.Equal([2], sweep.IdleTables(sweep.Now));
        sweep.Forget(2);
        Assert.Empty(sweep.IdleTables(sweep.Now));
    }

    [Fact]
    public void An_image_is_idle_once_its_activity_has_not_changed_for_the_cache_timeout()
    {
        var time = new FakeTimeProvider();
        var sweep = new IdleSweep(time, TimeSpan.Zero, TimeSpan.FromSeconds(30));
        Assert.False(sweep.ImageIdle(7, sweep.Now)); // first look: activity seen now
        time.Advance(TimeSpan.FromSeconds(29));
        Assert.False(sweep.ImageIdle(7, sweep.Now));
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.True(sweep.ImageIdle(7, sweep.Now));
        Assert.False(sweep.ImageIdle(8, sweep.Now)); // used: idle time starts over
        time.Advance(TimeSpan.FromSeconds(30));
        Assert.True(sweep.ImageIdle(8, sweep.Now));
    }

    [Theory]
    [InlineData(10, 30, 5)]
    [InlineData(30, 0, 15)]
    [InlineData(0, 30, 15)]
    [InlineData(0, 0, -1)]
    public void The_sweep_ticks_at_half_the_shorter_timeout_that_is_on(int tableSeconds, int cacheSeconds, int periodSeconds)
    {
        var sweep = new IdleSweep(TimeProvider.System, TimeSpan.FromSeconds(tableSeconds), TimeSpan.FromSeconds(cacheSeconds));
        Assert.Equal(periodSeconds < 0 ? null : TimeSpan.FromSeconds(periodSeconds), sweep.Period);
        Assert.Empty(sweep.IdleTables(sweep.Now));
        Assert.False(sweep.ImageIdle(0, sweep.Now));
    }
}
