using System.Runtime.CompilerServices;
using Qcow2Actors.Engine.Read;

namespace Qcow2Actors.Engine;

/// <summary>
/// A run of guest bytes allocated at the same depth of the backing chain, as QEMU's
/// <c>qemu:allocation-depth</c> reports it: 0 when no layer allocates the bytes, 1 when this image
/// does, N when the (N-1)th backing file does.
/// </summary>
/// <param name="Start">Guest byte offset where the run starts.</param>
/// <param name="Length">Bytes in the run.</param>
/// <param name="Depth">The depth (see above).</param>
public readonly record struct AllocationDepthExtent(long Start, long Length, int Depth);

public sealed partial class Qcow2Image
{
    /// <summary>
    /// Which layer of the backing chain allocates each byte of [<paramref name="offset"/>,
    /// <paramref name="offset"/> + <paramref name="length"/>), as maximal runs in order, with QEMU's rules
    /// (<c>bdrv_is_allocated_above</c>): zero clusters count as allocated; a raw image allocates
    /// everything; the bytes past the end of a backing file shorter than the layer above it count as
    /// allocated in that backing file (it supplies their zeroes). This differs from
    /// <see cref="GetMapAsync"/>'s depth, which follows qemu-img map.
    /// </summary>
    public async IAsyncEnumerable<AllocationDepthExtent> GetAllocationDepthAsync(long offset, long length,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        CheckRange(offset, length);
        long end = offset + length;
        AllocationDepthExtent? current = null;
        for (long pos = offset; pos < end;)
        {
            AllocationDepthExtent? next = null;
            using (await EnterAsync(cancellationToken).ConfigureAwait(false))
            {
                // An online snapshot apply may have shrunk the disk since the range was checked.
                if (pos < VirtualSize) next = await DepthAtAsync(pos, Math.Min(end, VirtualSize) - pos, cancellationToken).ConfigureAwait(false);
            }
            if (next is not { } run) break;
            pos += run.Length;
            if (current is { } c && c.Depth == run.Depth)
            {
                current = c with { Length = c.Length + run.Length };
                continue;
            }
            if (current is { } done) yield return done;
            current = run;
        }
        if (current is { } last) yield return last;
    }

    /// <summary>The depth of the run starting at <paramref name="offset"/> (at most <paramref name="length"/> bytes).</summary>
    private async ValueTask<AllocationDepthExtent> DepthAtAsync(long offset, long length, CancellationToken cancellationToken)
    {
        IImageLayer layer = _top;
        int depth = 1;
        while (true)
        {
            var status = await layer.GetStatusAsync(offset, length, cancellationToken).ConfigureAwait(false);
            length = status.Length;
            if (status.Allocated) return new AllocationDepthExtent(offset, length, depth);
            if (layer.Backing is not { } backing) return new AllocationDepthExtent(offset, length, 0);
            // Past a shorter backing file's end its synthesized zeroes count as allocated there.
            if (offset >= backing.Size) return new AllocationDepthExtent(offset, length, depth + 1);
            layer = backing;
            length = Math.Min(length, backing.Size - offset);
            depth++;
        }
    }
}
