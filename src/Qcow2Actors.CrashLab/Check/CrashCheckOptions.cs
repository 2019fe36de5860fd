namespace Qcow2Actors.CrashLab.Check;

/// <summary>How <see cref="CrashChecker"/> runs the user's checker.</summary>
public sealed record CrashCheckOptions
{
    /// <summary>Shell command run once per state (<c>/bin/sh -c</c>); exit 0 means the state passed. Placeholders:
    /// <c>{image}</c> the state as a qcow2 overlay, <c>{uri}</c> an nbd+unix URI serving it read-only,
    /// <c>{raw}</c> the state as a sparse raw file (for tools that read raw images only, such as e2fsck).</summary>
    public required string Command { get; init; }

    /// <summary>States checked at once.</summary>
    public int Jobs { get; init; } = 1;

    /// <summary>A checker still running after this long is killed and the state counts as failed.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>When set, every failing state is also written here as a standalone qcow2 image named after its id.</summary>
    public string? KeepFailedDirectory { get; init; }

    /// <summary>Most characters of checker output kept per failure (the end of it).</summary>
    public int MaxOutput { get; init; } = 4000;
}
