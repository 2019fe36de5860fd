using Qcow2Actors.CrashLab.States;

namespace Qcow2Actors.CrashLab.Tests.States;

public sealed class CrashStateSpaceTests
{
    private static readonly CrashLogHeader Header = new("/img.qcow2", "q2a-record-x", 1 << 20, DateTimeOffset.UnixEpoch);

    // Builds a log in memory through the real writer.
    private static async Task<CrashLog> Log(Action<CrashLogWriter> body)
    {
        var path = Path.Combine(Path.GetTempPath(), $"q2a-states-{Guid.NewGuid():N}.log");
        try
        {
            var writer = CrashLogWriter.Create(path, Header);
            body(writer);
            await writer.DisposeAsync();
            return CrashLogReader.Read(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void Done(CrashLogWriter w, long id) => w.Complete(id, ok: true);

    // Commit record (1 sector) and its data (8 sectors) written with no flush between, then one flush.
    private static Task<CrashLog> OrderingBug() => Log(w =>
    {
        var commit = w.BeginWrite(0, new byte[512], fua: false);
        Done(w, commit);
        var data = w.BeginWrite(65536, new byte[4096], fua: false);
        Done(w, data);
        var flush = w.BeginFlush();
        Done(w, flush);
    });

    [Fact]
    public async Task Writes_completed_before_a_flush_began_are_durable_after_it_and_volatile_before()
    {
        var space = CrashStateSpace.Build(await OrderingBug(), 512);

        Assert.Equal(2, space.Points.Count);
        Assert.Empty(space.Points[0].Durable);
        Assert.Equal([1L, 2], space.Points[0].Volatile.Select(o => o.Id));
        Assert.Equal((1, 0), (space.Points[1].Epoch, space.Points[1].Volatile.Count));
        Assert.Equal([1L, 2], space.Points[1].Durable.Select(o => o.Id));
    }

    [Fact]
    public async Task Few_states_are_listed_exhaustively_with_every_tear_of_a_multi_sector_write()
    {
        var space = CrashStateSpace.Build(await OrderingBug(), 512);

        var selection = space.Select(maxStates: 1000, seed: 1);

        // 2 fates for the 1-sector commit x (2 + 7 prefixes + 7 suffixes) for the 8-sector data, + the flushed state.
        Assert.True(selection.IsExhaustive);
        Assert.Equal(33, selection.States.Count);
        Assert.Equal(33, selection.Total);
        Assert.Equal(selection.States.Count, selection.States.Select(s => s.Id).Distinct().Count());
        var commitWithoutData = selection.States.Count(s =>
            s.Choices.Any(c => c.Operation.Id == 1 && c.Fate == CrashWriteFate.Kept) &&
            s.Choices.Any(c => c.Operation.Id == 2 && c.Fate != CrashWriteFate.Kept));
        Assert.Equal(15, commitWithoutData);
    }

    [Fact]
    public async Task At_4096_byte_sectors_a_4_KiB_write_does_not_tear()
    {
        var selection = CrashStateSpace.Build(await OrderingBug(), 4096).Select(1000, 1);

        Assert.Equal(2 * 2 + 1, selection.States.Count);
        Assert.DoesNotContain(selection.States, s => s.Torn.Any());
    }

    [Fact]
    public async Task Every_listed_id_rebuilds_the_same_state()
    {
        var space = CrashStateSpace.Build(await OrderingBug(), 512);
        foreach (var state in space.Select(1000, 1).States.Concat(space.Select(5, 9).States))
        {
            var again = space.Resolve(state.Id);
            Assert.Equal(state.Point.Index, again.Point.Index);
            Assert.Equal(state.Choices.Select(c => (c.Fate, string.Join(',', c.KeptRanges))),
                again.Choices.Select(c => (c.Fate, string.Join(',', c.KeptRanges))));
        }
    }

    [Fact]
    public async Task Many_states_are_sampled_up_to_the_bound_and_the_same_seed_gives_the_same_states()
    {
        var log = await Log(w =>
        {
            for (var i = 0; i < 20; i++)
                Done(w, w.BeginWrite(i * 8192L, new byte[8192], fua: false));
            Done(w, w.BeginFlush());
        });
        var space = CrashStateSpace.Build(log, 512);

        var first = space.Select(maxStates: 50, seed: 7);
        var second = space.Select(maxStates: 50, seed: 7);
        var other = space.Select(maxStates: 50, seed: 8);

        Assert.False(first.IsExhaustive);
        Assert.Equal(50, first.States.Count);
        Assert.Equal(first.States.Select(s => s.Id), second.States.Select(s => s.Id));
        Assert.NotEqual(first.States.Select(s => s.Id), other.States.Select(s => s.Id));
        Assert.Contains(first.States, s => s.Torn.Any());
        Assert.All(first.States.SelectMany(s => s.Torn), t => Assert.InRange(t.SectorsKept, 1, t.Sectors - 1));
    }

    [Fact]
    public async Task A_FUA_write_is_durable_once_its_completion_is_logged_and_a_write_never_completed_stays_volatile()
    {
        var log = await Log(w =>
        {
            Done(w, w.BeginWrite(0, new byte[512], fua: true));
            w.BeginWrite(512, new byte[512], fua: false); // in flight at the end of the log
        });

        var space = CrashStateSpace.Build(log, 512);

        Assert.Equal(2, space.Points.Count);
        Assert.Equal([1L], space.Points[0].Volatile.Select(o => o.Id)); // cut just before the FUA completed
        Assert.Equal([1L], space.Points[1].Durable.Select(o => o.Id));
        Assert.Equal([2L], space.Points[1].Volatile.Select(o => o.Id));
    }

    [Fact]
    public async Task A_failed_flush_makes_nothing_durable()
    {
        var log = await Log(w =>
        {
            Done(w, w.BeginWrite(0, new byte[512], fua: false));
            w.Complete(w.BeginFlush(), ok: false);
        });

        var space = CrashStateSpace.Build(log, 512);

        Assert.All(space.Points, p => Assert.Empty(p.Durable));
    }

    [Fact]
    public async Task An_id_that_does_not_fit_the_log_is_refused_naming_it()
    {
        var space = CrashStateSpace.Build(await OrderingBug(), 512);

        Assert.Contains("p9x0", Assert.Throws<FormatException>(() => space.Resolve("p9x0")).Message);
        Assert.Contains("p0x999", Assert.Throws<FormatException>(() => space.Resolve("p0x999")).Message);
        Assert.Contains("bogus", Assert.Throws<FormatException>(() => space.Resolve("bogus")).Message);
    }
}
