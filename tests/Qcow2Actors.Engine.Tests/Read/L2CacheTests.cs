using Qcow2Actors.Engine.Read;

namespace Qcow2Actors.Engine.Tests.Read;

public sealed class L2CacheTests
{
    private static L2View View(long offset, ulong first = 0) => new(offset, [first, 0, 0, 0], extended: false);

    [Fact]
    public async Task Concurrent_misses_on_one_table_share_a_single_load()
    {
        var cache = new L2Cache(8);
        int loads = 0;
        var gate = new TaskCompletionSource();
        async Task<L2View> Load(long off, CancellationToken ct)
        {
            Interlocked.Increment(ref loads);
            await gate.Task;
            return View(off);
        }
        var a = cache.GetOrLoadAsync(0x10000, Load, default).AsTask();
        var b = cache.GetOrLoadAsync(0x10000, Load, default).AsTask();
        gate.SetResult();
        Assert.Same(await a, await b);
        Assert.Equal(1, loads);
    }

    [Fact]
    public async Task Published_table_wins_over_a_load_that_was_in_flight()
    {
        var cache = new L2Cache(8);
        var gate = new TaskCompletionSource();
        async Task<L2View> Load(long off, CancellationToken ct) { await gate.Task; return View(off, first: 1); }
        var reading = cache.GetOrLoadAsync(0x10000, Load, default).AsTask();
        var published = View(0x10000, first: 2);
        cache.Publish(published);
        gate.SetResult();
        await reading;
        Assert.True(cache.TryGet(0x10000, out var now));
        Assert.Same(published, now);
    }

    [Fact]
    public async Task Holds_no_more_than_its_capacity_and_drops_the_least_recently_used()
    {
        var cache = new L2Cache(4);
        for (long i = 1; i <= 4; i++) cache.Publish(View(i << 16));
        Assert.True(cache.TryGet(1 << 16, out _)); // touch the oldest
        for (long i = 5; i <= 6; i++)
            await cache.GetOrLoadAsync(i << 16, (off, _) => Task.FromResult(View(off)), default);
        Assert.True(cache.Count <= 4);
        Assert.True(cache.TryGet(1 << 16, out _));
        Assert.False(cache.TryGet(2 << 16, out _));
    }

    [Fact]
    public async Task Invalidated_table_is_loaded_again()
    {
        var cache = new L2Cache(4);
        int loads = 0;
        Task<L2View> Load(long off, CancellationToken ct) { loads++; return Task.FromResult(View(off)); }
        await cache.GetOrLoadAsync(0x20000, Load, default);
        cache.Invalidate(0x20000);
        await cache.GetOrLoadAsync(0x20000, Load, default);
        Assert.Equal(2, loads);
    }

    [Fact]
    public void Dropping_unpinned_tables_keeps_only_the_pinned_ones()
    {
        var cache = new L2Cache(8);
        for (int i = 1; i <= 4; i++) cache.Publish(View(i * 0x10000L));
        cache.Pin(0x20000);
        cache.DropUnpinned();
        Assert.Equal(1, cache.Count);
        Assert.True(cache.TryGet(0x20000, out _));
        Assert.False(cache.TryGet(0x10000, out _));
    }

    [Fact]
    public async Task Activity_changes_with_every_lookup_load_and_publish_and_not_otherwise()
    {
        var cache = new L2Cache(8);
        long before = cache.Activity;
        Assert.Equal(before, cache.Activity);
        cache.Publish(View(0x10000));
        long published = cache.Activity;
        Assert.NotEqual(before, published);
        cache.TryGet(0x10000, out _);
        long looked = cache.Activity;
        Assert.NotEqual(published, looked);
        await cache.GetOrLoadAsync(0x20000, (off, _) => Task.FromResult(View(off)), default);
        Assert.NotEqual(looked, cache.Activity);
        long settled = cache.Activity;
        cache.Pin(0x10000);
        cache.Unpin(0x10000);
        cache.DropUnpinned();
        Assert.Equal(settled, cache.Activity);
    }
}
