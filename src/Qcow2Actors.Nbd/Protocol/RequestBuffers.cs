using System.Buffers;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// Where request payloads and reply buffers come from. Small ones from the shared pool; those over
/// <see cref="LargeThreshold"/> (1 MiB reads and writes) from a small pool of its own. The shared pool keeps a
/// cached array per thread and per core for every size: with dozens of pool threads touching 1-2 MiB buffers
/// that held tens of MiB for good (peak RSS of serve), where a few arrays serve a connection's queue.
/// The large pool sizes its arrays so that a read reply (data behind its header) fits the array of a write of
/// the same length (<see cref="LargeBufferPool"/>).
/// </summary>
internal static class RequestBuffers
{
    /// <summary>Buffers longer than this come from the bounded large pool.</summary>
    public const int LargeThreshold = 64 * 1024;

    // Twice QD8 per size: a reply's buffer comes back only after its send completes, when the client may already
    // have sent its next request, so 9-10 are out at QD8; with 8 kept each extra one was a 1 MiB array dropped to the
    // large object heap (34 MiB more peak RSS over a 1 GiB seqread). More than 16 are allocated and dropped.
    private static readonly LargeBufferPool Large = new(minimumLength: LargeThreshold, maximumLength: 64 * 1024 * 1024, maxArraysPerBucket: 16);

    /// <summary>An array of at least <paramref name="length"/> bytes; give it back with <see cref="Return"/>.</summary>
    public static byte[] Rent(int length) => length > LargeThreshold ? Large.Rent(length) : ArrayPool<byte>.Shared.Rent(length);

    /// <summary>Gives back an array from <see cref="Rent"/> (or any array the shared pool accepts) to the pool of its size; a large one of no pooled size is dropped.</summary>
    public static void Return(byte[] buffer)
    {
        if (buffer.Length > LargeThreshold) Large.Return(buffer);
        else ArrayPool<byte>.Shared.Return(buffer);
    }
}
