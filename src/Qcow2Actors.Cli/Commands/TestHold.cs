namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// A point where a test stops a long verb (rebase, commit, dd) to probe its locks or SIGKILL it: with
/// <c>Q2A_TEST_HOLD=copied:N</c> the verb, once it has written N bytes, prints
/// <c>q2a: test hold</c> on stderr and waits to be killed; with <c>Q2A_TEST_HOLD=end</c> it
/// does so after its last write, before it closes the images; with <c>Q2A_TEST_HOLD=at:NAME</c>
/// it does so at the point the verb names NAME (commit: <c>committed</c>, after the base is
/// written and closed, before the top is emptied; convert and dd with a qcow2 target: <c>created</c>, after the
/// target is created and locked, before the engine opens it). Unset, nothing happens.
/// </summary>
internal sealed class TestHold
{
    private readonly long _afterBytes = -1;
    private readonly bool _atEnd;
    private readonly string? _point;
    private long _written;

    private TestHold(string? spec)
    {
        if (spec == "end") _atEnd = true;
        else if (spec is not null && spec.StartsWith("at:", StringComparison.Ordinal)) _point = spec[3..];
        else if (spec is not null && spec.StartsWith("copied:", StringComparison.Ordinal) && long.TryParse(spec.AsSpan(7), out var n)) _afterBytes = n;
    }

    /// <summary>The hold the environment asks for.</summary>
    public static TestHold FromEnvironment() => new(Environment.GetEnvironmentVariable("Q2A_TEST_HOLD"));

    /// <summary>Counts <paramref name="bytes"/> written; holds once the count reaches the threshold.</summary>
    public Task WrittenAsync(long bytes)
    {
        if (_afterBytes < 0) return Task.CompletedTask;
        _written += bytes;
        return _written >= _afterBytes ? HoldAsync() : Task.CompletedTask;
    }

    /// <summary>Holds when asked to hold at the end.</summary>
    public Task EndAsync() => _atEnd ? HoldAsync() : Task.CompletedTask;

    /// <summary>Holds when asked to hold at the point named <paramref name="point"/>.</summary>
    public Task AtAsync(string point) => string.Equals(_point, point, StringComparison.Ordinal) ? HoldAsync() : Task.CompletedTask;

    private static async Task HoldAsync()
    {
        await Console.Error.WriteLineAsync("q2a: test hold").ConfigureAwait(false);
        await Console.Error.FlushAsync().ConfigureAwait(false);
        await Task.Delay(Timeout.Infinite).ConfigureAwait(false);
    }
}
