namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>POST .../check: the counts <c>qemu-img check</c> reports.</summary>
public sealed record CheckReply
{
    /// <summary>Failures of the check itself (I/O errors, unreadable metadata).</summary>
    public long Errors { get; init; }
    /// <summary>Leaked clusters.</summary>
    public long Leaks { get; init; }
    /// <summary>Corruptions.</summary>
    public long Corruptions { get; init; }
    /// <summary>Allocated guest clusters.</summary>
    public long AllocatedClusters { get; init; }
    /// <summary>Guest clusters in all.</summary>
    public long TotalClusters { get; init; }
    /// <summary>One line per finding, worded as qemu-img words it.</summary>
    public IReadOnlyList<string> Messages { get; init; } = [];
}
