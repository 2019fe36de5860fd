using System.Buffers;

namespace Qcow2Actors.Engine.Check;

/// <summary>
/// Cluster-sized scratch buffers for the checker, the repair and header writes, pooled so a
/// 2 MiB-cluster image does not cost fresh page-faulting arrays on every check and header write.
/// A pool of their own, not <see cref="ArrayPool{T}.Shared"/>: these buffers are written back to
/// the image (L2 tables with fixed COPIED flags, cluster 0), so no other code's buffer misuse in
/// the process may ever reach them.
/// </summary>
internal static class ClusterBuffers
{
    private static readonly ArrayPool<byte> Pool = ArrayPool<byte>.Create(maxArrayLength: 2 * 1024 * 1024, maxArraysPerBucket: 64);

    /// <summary>A buffer of at least <paramref name="length"/> bytes (contents arbitrary).</summary>
    public static byte[] Rent(int length) => Pool.Rent(length);

    /// <summary>Gives back a buffer from <see cref="Rent"/>.</summary>
    public static void Return(byte[] buffer) => Pool.Return(buffer);
}
