using System.Buffers;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

// BLOCK_STATUS: the export's extents for each selected metadata context, trimmed, merged and capped into one
// structured reply. Apart from the rest of the dispatcher because it is the only command with its own reply shape.
internal sealed partial class NbdCommandDispatcher
{
    /// <summary>Cap on descriptors in one block-status reply; clients ask again from where it stops.</summary>
    private const int MaxExtentsPerReply = 64 * 1024;

    /// <summary>The largest BLOCK_STATUS reply with one context selected (chunk header, context id, <see cref="MaxExtentsPerReply"/> descriptors).</summary>
    public const int MaxBlockStatusReplyLength =
        ChunkHeader.Size + BlockStatusPayload.DescriptorsOffset + BlockStatusPayload.DescriptorSize * MaxExtentsPerReply;

    /// <summary>
    /// A BLOCK_STATUS, answered for every context the client selected (in the order the handshake listed
    /// them), as one reply of one chunk per context. Every context is asked before anything is sent, so a
    /// failure is one error reply rather than a partial answer.
    /// </summary>
    private async Task BlockStatusAsync(NbdRequest r, long charge)
    {
        await Task.Yield();
        try
        {
            string? problem = null;
            if (!session.MetaActive) problem = "no metadata context was negotiated";
            else if (r.HasFlagsBeyond(CmdFlagFua | CmdFlagReqOne)) problem = "unsupported flags for BLOCK_STATUS";
            else if (r.Length == 0) problem = "zero-length block status";
            else if (!InRange(r.Offset, r.Length, _export.Size)) problem = "block status beyond the end of the export";
            if (problem is not null)
            {
                replies.Status(r, NbdError.InvalidArgument, problem, charge);
                return;
            }

            var contexts = session.MetaContexts;
            var perContext = MaxExtentsPerContext(contexts.Count);
            var descriptors = ArrayPool<(uint Length, uint Flags)>.Shared.Rent(perContext * contexts.Count);
            var chunks = ArrayPool<(uint ContextId, int Count)>.Shared.Rent(contexts.Count);
            try
            {
                int used = 0;
                for (int c = 0; c < contexts.Count; c++)
                {
                    var context = contexts[c];
                    int count;
                    try
                    {
                        count = await FillAsync(context, r, descriptors.AsMemory(used, perContext));
                    }
                    catch (Exception ex) when (!AbortedBy(ex))
                    {
                        var (error, message) = Failure(ex);
                        replies.Status(r, error, message, charge);
                        return;
                    }
                    chunks[c] = (context.Id, count);
                    used += count;
                }
                replies.BlockStatus(r, descriptors.AsSpan(0, used), chunks.AsSpan(0, contexts.Count), charge);
            }
            finally
            {
                ArrayPool<(uint Length, uint Flags)>.Shared.Return(descriptors);
                ArrayPool<(uint ContextId, int Count)>.Shared.Return(chunks);
            }
        }
        catch (Exception ex)
        {
            Abandon(ex, r, charge);
        }
    }

    /// <summary>Descriptors one context may use in a reply of <paramref name="contexts"/> contexts: the cap shared out, at least one each.</summary>
    private static int MaxExtentsPerContext(int contexts) => Math.Max(1, MaxExtentsPerReply / Math.Max(1, contexts));

    /// <summary>
    /// The largest BLOCK_STATUS reply for <paramref name="contexts"/> selected contexts (a chunk header and
    /// context id each, and their descriptors): what one request is charged against the byte budget.
    /// </summary>
    public static long MaxBlockStatusReplyLengthFor(int contexts)
    {
        contexts = Math.Max(1, contexts);
        return (long)contexts * (ChunkHeader.Size + BlockStatusPayload.DescriptorsOffset)
            + (long)BlockStatusPayload.DescriptorSize * MaxExtentsPerContext(contexts) * contexts;
    }

    /// <summary>Asks the export for one context's extents and puts them, trimmed and merged, into <paramref name="into"/>; returns how many.</summary>
    private async ValueTask<int> FillAsync(NbdMetaContext context, NbdRequest r, Memory<(uint Length, uint Flags)> into)
    {
        var offset = (long)r.Offset;
        var builder = new DescriptorBuilder(r.Length, r.Has(CmdFlagReqOne), into.Length);
        switch (context.Kind)
        {
            case NbdMetaKind.BaseAllocation:
                var allocation = await _export.GetBlockStatusAsync(offset, r.Length, abort);
                for (int i = 0; i < allocation.Count && builder.Add(into.Span, allocation[i].Length, (uint)(allocation[i].Flags & (NbdExtentFlags.Hole | NbdExtentFlags.Zero))); i++) { }
                break;
            case NbdMetaKind.AllocationDepth:
                var depth = await _export.GetAllocationDepthAsync(offset, r.Length, abort);
                for (int i = 0; i < depth.Count && builder.Add(into.Span, depth[i].Length, depth[i].Flags); i++) { }
                break;
            default:
                var bitmap = await _export.GetDirtyBitmapAsync(context.Bitmap!, offset, r.Length, abort);
                for (int i = 0; i < bitmap.Count && builder.Add(into.Span, bitmap[i].Length, bitmap[i].Flags & NbdMetaExtent.Dirty); i++) { }
                break;
        }
        var count = builder.Count;
        if (count > 0) return count;
        // An export that said nothing: "allocated, contents unknown" is a truthful base:allocation
        // answer, but no depth or bitmap value is, so those fail the request instead of guessing.
        if (context.Kind != NbdMetaKind.BaseAllocation)
            throw new NbdException(NbdError.IoError, $"export '{_export.Name}' gave no extents for {context.Name} at {offset}");
        into.Span[0] = (r.Length, 0);
        return 1;
    }

    /// <summary>
    /// Turns an export's extents into wire descriptors: trimmed to the request's length, neighbours
    /// with the same value merged, at most one with REQ_ONE, at most the room given.
    /// </summary>
    private struct DescriptorBuilder(uint length, bool reqOne, int room)
    {
        private long _remaining = length;
        private int _count;

        /// <summary>Adds one extent; false once nothing more fits or is wanted.</summary>
        public bool Add(Span<(uint Length, uint Flags)> descriptors, long extentLength, uint flags)
        {
            if (extentLength <= 0 || _remaining == 0) return false; // a malformed tail: report what we have
            var take = (uint)Math.Min(extentLength, _remaining);
            if (_count > 0 && descriptors[_count - 1].Flags == flags)
                descriptors[_count - 1].Length += take;
            else if (_count < room && !(reqOne && _count == 1))
                descriptors[_count++] = (take, flags);
            else
                return false;
            _remaining -= take;
            return _remaining > 0;
        }

        /// <summary>Descriptors filled so far.</summary>
        public readonly int Count => _count;
    }
}
