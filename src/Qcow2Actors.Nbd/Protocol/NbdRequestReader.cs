using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>What reading one request header produced.</summary>
internal enum RequestReadStatus
{
    /// <summary>A whole header with the right magic.</summary>
    Request,

    /// <summary>The client closed cleanly between requests.</summary>
    HungUp,

    /// <summary>The client closed part-way through a header.</summary>
    Truncated,

    /// <summary>The header's magic is wrong: framing is lost.</summary>
    BadMagic,
}

/// <summary>
/// Parses the transmission phase's 28-byte request headers (and copies WRITE payloads) straight
/// out of the connection's pipe: no per-request buffer, no copy of a header that arrived whole.
/// </summary>
internal sealed class NbdRequestReader(PipeReader reader)
{
    /// <summary>The wrong magic of the last <see cref="RequestReadStatus.BadMagic"/> header, for the log line.</summary>
    public uint LastBadMagic { get; private set; }

    /// <summary>Decodes a whole header; the magic is not checked here.</summary>
    public static NbdRequest Parse(ReadOnlySpan<byte> header) => new(
        BinaryPrimitives.ReadUInt16BigEndian(header[RequestHeader.FlagsOffset..]),
        BinaryPrimitives.ReadUInt16BigEndian(header[RequestHeader.TypeOffset..]),
        BinaryPrimitives.ReadUInt64BigEndian(header[RequestHeader.HandleOffset..]),
        BinaryPrimitives.ReadUInt64BigEndian(header[RequestHeader.OffsetOffset..]),
        BinaryPrimitives.ReadUInt32BigEndian(header[RequestHeader.LengthOffset..]));

    /// <summary>True when a whole request (header and any write payload) is already buffered, so reading it will not wait.</summary>
    public bool HasBufferedRequest()
    {
        if (!reader.TryRead(out var result)) return false;
        var buffer = result.Buffer;
        bool whole = false;
        if (buffer.Length >= RequestHeader.Size)
        {
            var request = Parse(HeaderSpan(buffer, stackalloc byte[RequestHeader.Size]));
            long need = RequestHeader.Size;
            if (request.Type == CmdWrite) need += request.Length;
            whole = buffer.Length >= need;
        }
        reader.AdvanceTo(buffer.Start);
        return whole;
    }

    /// <summary>Reads the next header; the request is meaningful only with <see cref="RequestReadStatus.Request"/>.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<(RequestReadStatus Status, NbdRequest Request)> ReadHeaderAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            if (buffer.Length >= RequestHeader.Size)
            {
                var (status, request) = Decode(buffer);
                reader.AdvanceTo(buffer.GetPosition(RequestHeader.Size));
                return (status, request);
            }
            if (result.IsCompleted)
            {
                var status = buffer.Length == 0 ? RequestReadStatus.HungUp : RequestReadStatus.Truncated;
                reader.AdvanceTo(buffer.End);
                return (status, default);
            }
            reader.AdvanceTo(buffer.Start, buffer.End); // all seen, not enough: wait for more
        }
    }

    /// <summary>Copies a WRITE's payload into <paramref name="destination"/>; a close part-way throws.</summary>
    public ValueTask<bool> ReadPayloadAsync(Memory<byte> destination, CancellationToken cancellationToken) =>
        PipeReading.ReadExactAsync(reader, destination, allowEof: false, cancellationToken);

    private (RequestReadStatus, NbdRequest) Decode(ReadOnlySequence<byte> buffer)
    {
        var header = HeaderSpan(buffer, stackalloc byte[RequestHeader.Size]);
        var magic = BinaryPrimitives.ReadUInt32BigEndian(header[RequestHeader.MagicOffset..]);
        if (magic != RequestMagic)
        {
            LastBadMagic = magic;
            return (RequestReadStatus.BadMagic, default);
        }
        return (RequestReadStatus.Request, Parse(header));
    }

    /// <summary>The header bytes: a slice of the first segment when it holds them all, else copied into <paramref name="scratch"/>.</summary>
    private static ReadOnlySpan<byte> HeaderSpan(ReadOnlySequence<byte> buffer, Span<byte> scratch)
    {
        var first = buffer.FirstSpan;
        if (first.Length >= RequestHeader.Size) return first[..RequestHeader.Size];
        buffer.Slice(0, RequestHeader.Size).CopyTo(scratch);
        return scratch;
    }
}
