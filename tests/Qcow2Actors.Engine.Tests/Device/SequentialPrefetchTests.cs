using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// <see cref="SequentialPrefetch"/> hints the range ahead of a forward stream of large reads, once per range, and
/// nothing for small reads, a stream's first read, or a jump.
/// </summary>
public sealed class SequentialPrefetchTests
{
    private const int MiB = 1024 * 1024;

    [Fact]
    public void A_streams_second_read_asks_for_the_window_past_it_and_later_reads_only_for_what_is_new()
    {
        var prefetch = new SequentialPrefetch();
        Assert.Equal((0, 0), prefetch.OnRead(0, MiB));
        Assert.Equal((MiB * 2L, SequentialPrefetch.Window), prefetch.OnRead(MiB, MiB));
        Assert.Equal((0, 0), prefetch.OnRead(2L * MiB, MiB)); // one more MiB is less than a step
        Assert.Equal((2L * MiB + SequentialPrefetch.Window, 2L * MiB), prefetch.OnRead(3L * MiB, MiB));
    }

    [Fact]
    public void Only_ranges_a_hint_asked_for_count_as_hinted_and_a_jump_forgets_them()
    {
        var prefetch = new SequentialPrefetch();
        prefetch.OnRead(0, MiB);
        Assert.False(prefetch.Hinted(MiB)); // a stream's first read asks for nothing
        prefetch.OnRead(MiB, MiB); // hints [2 MiB, 2 MiB + window)
        Assert.True(prefetch.Hinted(3L * MiB));
        Assert.True(prefetch.Hinted(2L * MiB + SequentialPrefetch.Window));
        Assert.False(prefetch.Hinted(2L * MiB + SequentialPrefetch.Window + 1));
        Assert.False(prefetch.Hinted(2L * MiB)); // the read that asked: its own bytes were not hinted

        prefetch.OnRead(1024L * MiB, MiB); // a jump starts a new stream
        Assert.False(prefetch.Hinted(3L * MiB));
        Assert.False(prefetch.Hinted(1025L * MiB));
    }

    [Fact]
    public void Reads_of_a_stream_that_arrive_out_of_order_stay_in_it_and_the_hints_cover_it_once_without_gaps()
    {
        var prefetch = new SequentialPrefetch();
        var random = new Random(5);
        long hintedTo = -1, covered = 0;
        for (long batch = 0; batch < 64; batch += 8)
        {
            // Eight requests in flight reach the device in any order, as the server's pool threads run them.
            foreach (var i in Enumerable.Range(0, 8).OrderBy(_ => random.Next()))
            {
                var (offset, length) = prefetch.OnRead((batch + i) * MiB, MiB);
                if (length == 0) continue;
                if (hintedTo >= 0) Assert.Equal(hintedTo, offset); // contiguous with the last hint, no overlap
                Assert.True(length >= SequentialPrefetch.Step);
                hintedTo = offset + length;
                covered += length;
            }
        }
        Assert.True(hintedTo >= 64L * MiB + SequentialPrefetch.Window - SequentialPrefetch.Step, $"hinted only to {hintedTo}");
        Assert.True(covered <= 64L * MiB + SequentialPrefetch.Window);
    }

    [Fact]
    public void Small_reads_ask_for_nothing_and_a_jump_back_past_the_window_or_forward_starts_a_new_stream()
    {
        const long W = SequentialPrefetch.Window;
        var prefetch = new SequentialPrefetch();
        Assert.Equal((0, 0), prefetch.OnRead(0, SequentialPrefetch.MinRead - 512));
        Assert.Equal((0, 0), prefetch.OnRead(100L * MiB, MiB));
        Assert.Equal((102L * MiB, W), prefetch.OnRead(101L * MiB, MiB));
        Assert.Equal((0, 0), prefetch.OnRead(80L * MiB, MiB)); // more than a window behind
        Assert.Equal((82L * MiB, W), prefetch.OnRead(81L * MiB, MiB));
        Assert.Equal((0, 0), prefetch.OnRead(500L * MiB, MiB)); // past the stream's end
        Assert.Equal((502L * MiB, W), prefetch.OnRead(501L * MiB, MiB));
    }
}
