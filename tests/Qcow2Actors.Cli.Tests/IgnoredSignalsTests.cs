using Qcow2Actors.Cli;

namespace Qcow2Actors.Cli.Tests;

public sealed class IgnoredSignalsTests
{
    [Fact]
    public void The_stop_signals_ignored_are_read_from_the_sigign_mask()
    {
        // SIGHUP (bit 0), SIGINT (bit 1), SIGPIPE (bit 12, .NET ignores it itself: not reported).
        var status = "Name:\tdotnet\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001003\nSigCgt:\t0000000000000000\n";
        Assert.Equal(["SIGHUP", "SIGINT"], IgnoredSignals.FromStatus(status));
        Assert.Empty(IgnoredSignals.FromStatus("SigIgn:\t0000000000001000\n"));
        Assert.Equal(["SIGTERM"], IgnoredSignals.FromStatus("SigIgn:\t0000000000004000\n"));
        Assert.Empty(IgnoredSignals.FromStatus("no such line"));
    }

    [Fact]
    public void No_warning_without_ignored_signals_and_one_line_naming_them_otherwise()
    {
        Assert.Null(IgnoredSignals.Warning("serve", []));
        var line = IgnoredSignals.Warning("host", ["SIGHUP", "SIGINT"]);
        Assert.NotNull(line);
        Assert.StartsWith("q2a host: warning: SIGHUP and SIGINT were ignored", line);
        Assert.DoesNotContain('\n', line);
    }
}
