using System.IO.Compression;

namespace Qcow2Actors.Engine.Compression;

/// <summary>
/// qcow2's "zlib" compression, which is raw DEFLATE (RFC 1951) with no zlib header or
/// Adler-32: <see cref="DeflateStream"/>, never ZLibStream. .NET deflates with a 32 KiB
/// window where QEMU uses 4 KiB; QEMU's one-shot inflate reads either (FORMAT.md §10).
/// </summary>
internal sealed class ZlibCodec : ICompressionCodec
{
    public byte CompressionType => 0;

    public string Name => "zlib";

    public unsafe bool TryCompress(ReadOnlySpan<byte> cluster, Span<byte> output, out int written)
    {
        written = 0;
        var limit = Math.Min(output.Length, cluster.Length - 1);
        if (limit <= 0) return false;
        fixed (byte* dst = output)
        {
            var sink = new PointerSink(dst, limit);
            // Level 6 (Optimal) is zlib's Z_DEFAULT_COMPRESSION, which QEMU uses.
            using (var deflater = new DeflateStream(sink, CompressionLevel.Optimal, leaveOpen: true))
                deflater.Write(cluster);
            if (sink.Overflowed) return false;
            written = sink.Written;
            return true;
        }
    }

    public unsafe void Decompress(ReadOnlySpan<byte> input, Span<byte> cluster)
    {
        if (input.IsEmpty) throw new InvalidDataException($"zlib: compressed cluster is empty, expected {cluster.Length} bytes of output");
        var total = 0;
        fixed (byte* src = input)
        {
            try
            {
                using var source = new UnmanagedMemoryStream(src, input.Length);
                using var inflater = new DeflateStream(source, CompressionMode.Decompress);
                // Like QEMU's inflate(Z_FINISH) into a cluster-sized buffer: stop when the
                // cluster is full, whether or not the stream has more to give.
                while (total < cluster.Length)
                {
                    var n = inflater.Read(cluster[total..]);
                    if (n == 0) break;
                    total += n;
                }
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"zlib: corrupt compressed cluster after {total} of {cluster.Length} bytes: {e.Message}", e);
            }
        }
        if (total != cluster.Length)
            throw new InvalidDataException($"zlib: compressed cluster inflates to {total} bytes, expected {cluster.Length}");
    }

    /// <summary>
    /// A write-only stream over a fixed block of memory that notes an overflow instead of
    /// throwing, so incompressible clusters (common: already-compressed guest data) cost no exception.
    /// </summary>
    private sealed unsafe class PointerSink(byte* start, int capacity) : Stream
    {
        public int Written { get; private set; }

        public bool Overflowed { get; private set; }

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => Written;

        public override long Position
        {
            get => Written;
            set => throw new NotSupportedException();
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (Overflowed) return;
            if (buffer.Length > capacity - Written)
            {
                Overflowed = true;
                return;
            }
            buffer.CopyTo(new Span<byte>(start + Written, capacity - Written));
            Written += buffer.Length;
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
