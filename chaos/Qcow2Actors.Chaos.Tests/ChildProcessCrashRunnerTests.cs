using Qcow2Actors.Chaos.Processes;

namespace Qcow2Actors.Chaos.Tests;

public class ChildProcessCrashRunnerTests
{
    // A stand-in workload process: announces and "flushes" ops forever, and ignores SIGTERM so
    // only a real SIGKILL can stop it.
    private const string Looping = """
        trap '' TERM
        i=0
        while true; do
          echo "STARTED $i"
          sleep 0.01
          echo "FLUSHED $i"
          i=$((i+1))
        done
        """;

    private static ChildProcessOptions Bash(string script, TimeSpan min, TimeSpan max) =>
        new() { FileName = "bash", Arguments = ["-c", script], KillAfterMin = min, KillAfterMax = max, Timeout = TimeSpan.FromSeconds(30) };

    [Fact]
    public async Task A_looping_child_is_killed_with_SIGKILL_and_its_complete_lines_come_back_in_order()
    {
        var result = await ChildProcessCrashRunner.RunAsync(
            // Wide enough that a loaded CI machine (bash start-up included) gets past the first flushes.
            Bash(Looping, TimeSpan.FromMilliseconds(1000), TimeSpan.FromMilliseconds(1500)), new Random(1));

        Assert.True(result.Killed);
        Assert.Equal(128 + 9, result.ExitCode);
        Assert.True(result.Log.LastFlushed >= 1, $"log: {result.Log}");
        Assert.InRange(result.Log.LastStarted - result.Log.LastFlushed, 0, 1);
        for (var i = 0; i <= result.Log.LastFlushed; i++) Assert.Contains(i, result.Log.Flushed);
        Assert.True(result.Elapsed >= TimeSpan.FromMilliseconds(1000), $"killed after {result.Elapsed}");
    }

    [Fact]
    public async Task A_child_that_exits_before_the_kill_time_is_not_killed()
    {
        var result = await ChildProcessCrashRunner.RunAsync(
            Bash("echo 'STARTED 0'; echo 'FLUSHED 0'; echo oops >&2; exit 3", TimeSpan.FromSeconds(20), TimeSpan.FromSeconds(20)), new Random(1));

        Assert.False(result.Killed);
        Assert.Equal(3, result.ExitCode);
        Assert.Equal(["STARTED 0", "FLUSHED 0"], result.Lines);
        Assert.Equal("oops\n", result.StandardError);
        Assert.Null(result.PartialLine);
    }

    [Fact]
    public async Task KillWhenLine_kills_right_after_the_chosen_line()
    {
        var options = Bash(Looping, TimeSpan.FromSeconds(20), TimeSpan.FromSeconds(20)) with
        {
            KillWhenLine = line => line == "FLUSHED 5",
        };

        var result = await ChildProcessCrashRunner.RunAsync(options, new Random(2));

        // How far the child gets past the line depends on how soon the parent reads the pipe, so
        // only the floor is exact; the 20 s timer not firing shows the line did the killing.
        Assert.True(result.Killed);
        Assert.True(result.Log.LastFlushed >= 5, $"log: {result.Log}");
        Assert.True(result.Elapsed < TimeSpan.FromSeconds(10), $"killed after {result.Elapsed}");
    }

    [Fact]
    public async Task A_line_the_kill_cut_short_is_returned_apart_and_never_parsed()
    {
        var result = await ChildProcessCrashRunner.RunAsync(
            Bash("trap '' TERM; printf 'STARTED 12\\nFLUSHED 1'; sleep 30", TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(300)), new Random(3));

        Assert.True(result.Killed);
        Assert.Equal("FLUSHED 1", result.PartialLine);
        Assert.Equal(-1, result.Log.LastFlushed);
        Assert.Equal(12, result.Log.LastStarted);
    }

    [Fact]
    public async Task Kill_times_are_drawn_from_the_seeded_random_inside_the_window()
    {
        var options = Bash(Looping, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(300));

        var result = await ChildProcessCrashRunner.RunAsync(options, new Random(4));

        Assert.True(result.Killed);
        Assert.InRange(result.Elapsed, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(5));
    }
}
