using System.Text.Json;
using Qcow2Actors.Chaos.PowerLoss;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// <c>q2a chaos --power-loss</c> in small: a CI-sized sample of crash states recovered and checked
/// with no failure, and the harness's own check: a disk that forgets flushed writes must fail it.
/// </summary>
public class PowerLossTests
{
    [QemuFact]
    public async Task A_sample_of_two_thousand_crash_states_recovers_with_no_failure()
    {
        using var dir = new TempDir();
        var failures = new List<PowerLossFailure>();
        var report = await PowerLossSession.RunAsync(new PowerLossOptions
        {
            States = 2000,
            Seed = 20261130,
            StatesPerRun = 500,
            QemuSampleEvery = 500,
            WorkDirectory = dir.Path,
        }, failures.Add);

        Assert.True(report.Failed == 0, string.Join("\n", failures.Take(5)));
        Assert.Equal(2000, report.States);
        Assert.True(report.Runs >= 4, $"{report.Runs} runs");
        Assert.Equal(4, report.QemuChecked);
    }

    [Fact]
    public async Task A_disk_that_drops_flushed_writes_is_caught()
    {
        using var dir = new TempDir();
        var report = await PowerLossSession.RunAsync(new PowerLossOptions
        {
            States = 300,
            Seed = 5,
            StatesPerRun = 150,
            QemuSampleEvery = 0,
            WorkDirectory = dir.Path,
            DropFlushedWrites = true,
        });

        Assert.Equal(300, report.States);
        Assert.True(report.Failed > 0, "a disk that forgets flushed writes went unnoticed");
        Assert.All(report.Failures, f => Assert.True(f.State >= 0 && f.Description.Length > 0 && f.Stage.Length > 0));
    }

    [Fact]
    public void Q2a_chaos_power_loss_exits_1_naming_the_failing_states_when_flushed_writes_are_dropped()
    {
        using var dir = new TempDir();
        var r = QemuTools.Q2a("chaos", "--power-loss", "--states", "200", "--states-per-run", "100", "--seed", "5", "--qemu-every", "0",
            "--drop-flushed-writes", dir.Path);

        Assert.True(r.ExitCode == 1, r.StdOut + r.StdErr);
        var fail = r.StdOut.Split('\n').First(l => l.StartsWith("FAIL run seed ", StringComparison.Ordinal));
        Assert.Contains(" state ", fail, StringComparison.Ordinal);
        Assert.Contains("rebuild: q2a chaos --power-loss --run-seed ", fail, StringComparison.Ordinal);
        Assert.Matches(@"power-loss: 200 states, [1-9]\d* failures, [\d.]+ s, \d+ states/s", r.StdOut);
    }

    [Fact]
    public void Q2a_chaos_power_loss_reports_states_and_failed_in_json()
    {
        using var dir = new TempDir();
        var r = QemuTools.Q2a("chaos", "--power-loss", "--states", "60", "--states-per-run", "60", "--seed", "3", "--qemu-every", "0",
            "--output", "json", dir.Path);

        Assert.True(r.ExitCode == 0, r.StdOut + r.StdErr);
        using var json = JsonDocument.Parse(r.StdOut);
        Assert.Equal(60, json.RootElement.GetProperty("states").GetInt64());
        Assert.Equal(0, json.RootElement.GetProperty("failed").GetInt64());
        Assert.True(json.RootElement.GetProperty("states_per_second").GetDouble() > 0);
    }
}
