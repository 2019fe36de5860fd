namespace Qcow2Actors.Chaos.Workloads;

/// <summary>
/// The disk a crash workload drives: the guest-visible operations of <c>Qcow2Image</c>, so an
/// adapter over the write engine is one line per method, and a raw device (or a deliberately
/// broken target) can stand in for tests of the harness itself.
/// </summary>
public interface IChaosTarget : IAsyncDisposable
{
    /// <summary>Guest size in bytes.</summary>
    long VirtualSize { get; }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/>; with <paramref name="fua"/> it is durable on completion.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default);

    /// <summary>Makes the range read as zeros; <paramref name="unmap"/> lets the target deallocate it.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, bool unmap = false, bool fua = false, CancellationToken cancellationToken = default);

    /// <summary>Tells the target the range's content is no longer needed: it may read back as zeros or as before.</summary>
    ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default);

    /// <summary>Makes every completed operation durable.</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>Fills <paramref name="buffer"/> with the guest bytes at <paramref name="offset"/>.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default);
}
