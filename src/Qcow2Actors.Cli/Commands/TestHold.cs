namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// A point where a crash test stops a long verb (rebase, commit) to SIGKILL it: with
/// <c>Q2A_TEST_HOLD=copied:N</c> the verb, once it has written N bytes, prints
/// <c>q2a: test hold</c> on stderr and waits to be killed; with <c>Q2A_TEST_HOLD=end</c> it
/// does so after its last write, before it closes the images. Unset, nothing happens.
/// </summary>
internal sealed class TestHold
{
    private readonly long _afterBytes = -1;
    private readonly bool _atEnd;
    private long _written;

    private TestHold(string? spec)
    {
        if (spec == "end") _atEnd = true;
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

    private static async Task HoldAsync()
    {
        await Console.Error.WriteLineAsync("q2a: test hold").ConfigureAwait(false);
        await Console.Error.FlushAsync().ConfigureAwait(false);
        await Task.Delay(Timeout.Infinite).ConfigureAwait(false);
    }
}
