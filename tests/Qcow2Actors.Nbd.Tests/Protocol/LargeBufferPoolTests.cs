using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>The pool of large request and reply buffers: sizes shared by reads and writes, and its bound.</summary>
public sealed class LargeBufferPoolTests
{
    private const int MiB = 1024 * 1024;

    [Fact]
    public void A_read_reply_with_its_header_room_reuses_the_array_of_a_write_of_the_same_length()
    {
        var pool = new LargeBufferPool(64 * 1024, 64 * MiB, 8);
        var write = pool.Rent(MiB);
        pool.Return(write);

        var read = pool.Rent(28 + MiB);

        Assert.Same(write, read);
        Assert.Equal(MiB + LargeBufferPool.Slack, read.Length);
    }

    [Fact]
    public void Every_rent_gets_at_least_the_length_asked_for()
    {
        var pool = new LargeBufferPool(64 * 1024, 64 * MiB, 8);
        foreach (var length in new[] { 0, 1, 64 * 1024, 64 * 1024 + 1, 64 * 1024 + LargeBufferPool.Slack + 1, MiB - 1, MiB + LargeBufferPool.Slack + 1, 32 * MiB + 28 })
            Assert.True(pool.Rent(length).Length >= length, $"{length}");
    }

    [Fact]
    public void A_bucket_keeps_at_most_its_bound_and_drops_arrays_of_other_sizes()
    {
        var pool = new LargeBufferPool(64 * 1024, 64 * MiB, 2);
        var rented = Enumerable.Range(0, 3).Select(_ => pool.Rent(MiB)).ToList();
        foreach (var b in rented) pool.Return(b);
        pool.Return(new byte[MiB]); // a plain power of two is not one of its sizes

        Assert.Equal(2, pool.Pooled(MiB));
    }

    [Fact]
    public void Arrays_beyond_the_largest_size_are_allocated_and_not_kept()
    {
        var pool = new LargeBufferPool(64 * 1024, 4 * MiB, 8);
        var big = pool.Rent(8 * MiB);
        pool.Return(big);

        Assert.Equal(8 * MiB, big.Length);
        Assert.Equal(0, pool.Pooled(8 * MiB));
    }
}
