using System.Buffers;
using System.IO.Pipelines;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>Exact-length reads and skips over a <see cref="PipeReader"/>, shared by the handshake and the request reader.</summary>
internal static class PipeReading
{
    /// <summary>
    /// Fills <paramref name="destination"/>. Returns false only when the peer closed cleanly before
    /// the first byte and <paramref name="allowEof"/> is set; a close part-way throws.
    /// </summary>
    public static async ValueTask<bool> ReadExactAsync(PipeReader reader, Memory<byte> destination, bool allowEof, CancellationToken cancellationToken)
    {
        var copied = 0;
        while (copied < destination.Length)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            var take = (int)Math.Min(buffer.Length, destination.Length - copied);
            buffer.Slice(0, take).CopyTo(destination.Span[copied..]);
            copied += take;
            reader.AdvanceTo(buffer.GetPosition(take));
            if (copied < destination.Length && result.IsCompleted)
            {
                if (copied == 0 && allowEof) return false;
                throw new EndOfStreamException($"client closed after {copied} of {destination.Length} bytes");
            }
        }
        return true;
    }

    /// <summary>Discards <paramref name="length"/> bytes (option data too large to buffer).</summary>
    public static async ValueTask SkipAsync(PipeReader reader, long length, CancellationToken cancellationToken)
    {
        while (length > 0)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var take = Math.Min(length, result.Buffer.Length);
            reader.AdvanceTo(result.Buffer.GetPosition(take));
            length -= take;
            if (length > 0 && result.IsCompleted) throw new EndOfStreamException("client closed while sending option data");
        }
    }
}
