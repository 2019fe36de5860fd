using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Chaos.Tests;

/// <summary><c>q2a chaos</c> as a user runs it: a separate process that SIGKILLs its own children.</summary>
public class ChaosCommandTests
{
    [QemuFact]
    public void Q2a_chaos_kills_three_workload_processes_and_proves_each_recovery()
    {
        using var dir = new TempDir();
        var r = QemuTools.Q2a("chaos", "--runs", "3", "--seed", "11", "--ops", "100", "--size", "8M", dir.Path);

        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        Assert.Equal(3, r.StdOut.Split('\n').Count(l => l.StartsWith("run ", StringComparison.Ordinal) && l.Contains(": ok ", StringComparison.Ordinal)));
        Assert.Contains("chaos: 3/3 runs passed, 0 failed", r.StdOut, StringComparison.Ordinal);
        // Passed runs clean up after themselves unless --keep.
        Assert.Empty(Directory.GetDirectories(dir.Path));
    }

    [Fact]
    public void Q2a_chaos_refuses_a_bad_size_with_one_line()
    {
        var r = QemuTools.Q2a("chaos", "--runs", "1", "--size", "12x");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("invalid --size", r.StdErr, StringComparison.Ordinal);
    }
}
