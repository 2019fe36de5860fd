using ZstdSharp;
using ZstdSharp.Unsafe;

namespace Qcow2Actors.Engine.Compression;

/// <summary>
/// qcow2's zstd compression: standard zstd frames with no length prefix. We write one frame
/// at the default level, as QEMU 5.1+ does. Reading follows QEMU's loop: decode frame after
/// frame until the cluster is full, ignore bytes after that, and reject a frame that is still
/// open when the cluster is full (the data would be longer than a cluster: damage).
/// </summary>
internal sealed unsafe class ZstdCodec : ICompressionCodec
{
    // One compressor and one decoder per thread: zstd contexts are not thread-safe, and
    // creating one per cluster would allocate hundreds of KiB on the read path.
    [ThreadStatic] private static Compressor? t_compressor;
    [ThreadStatic] private static DecodeContext? t_decoder;

    public byte CompressionType => 1;

    public string Name => "zstd";

    public bool TryCompress(ReadOnlySpan<byte> cluster, Span<byte> output, out int written)
    {
        written = 0;
        var limit = Math.Min(output.Length, cluster.Length - 1);
        if (limit <= 0) return false;
        var compressor = t_compressor ??= new Compressor(Compressor.DefaultCompressionLevel);
        try
        {
            return compressor.TryWrap(cluster, output[..limit], out written);
        }
        catch (ZstdException)
        {
            // "Destination buffer is too small" surfaces as an exception in some paths; for
            // us it only means the cluster does not compress well enough.
            written = 0;
            return false;
        }
    }

    public void Decompress(ReadOnlySpan<byte> input, Span<byte> cluster)
    {
        if (input.IsEmpty) throw new InvalidDataException($"zstd: compressed cluster is empty, expected {cluster.Length} bytes of output");
        var dctx = (t_decoder ??= new DecodeContext()).Context;
        Methods.ZSTD_DCtx_reset(dctx, ZSTD_ResetDirective.ZSTD_reset_session_only);
        fixed (byte* src = input)
        fixed (byte* dst = cluster)
        {
            var inBuf = new ZSTD_inBuffer_s { src = src, size = (nuint)input.Length, pos = 0 };
            var outBuf = new ZSTD_outBuffer_s { dst = dst, size = (nuint)cluster.Length, pos = 0 };
            nuint ret = 0;
            while (outBuf.pos < outBuf.size)
            {
                var lastIn = inBuf.pos;
                var lastOut = outBuf.pos;
                ret = Methods.ZSTD_decompressStream(dctx, &outBuf, &inBuf);
                if (Methods.ZSTD_isError(ret))
                    throw new InvalidDataException($"zstd: corrupt compressed cluster after {outBuf.pos} of {cluster.Length} bytes: {Methods.ZSTD_getErrorName(ret)}");
                if (inBuf.pos == lastIn && outBuf.pos == lastOut)
                    throw new InvalidDataException($"zstd: compressed cluster ends after {outBuf.pos} of {cluster.Length} bytes");
            }
            if (ret != 0)
                throw new InvalidDataException($"zstd: frame continues past the end of the {cluster.Length}-byte cluster");
        }
    }

    /// <summary>Owns a native-style zstd decompression context; the finalizer frees it when its thread's slot is dropped.</summary>
    private sealed class DecodeContext
    {
        public DecodeContext()
        {
            Context = Methods.ZSTD_createDCtx();
            if (Context == null) throw new InvalidOperationException("zstd: cannot create a decompression context");
        }

        ~DecodeContext() => Methods.ZSTD_freeDCtx(Context);

        public ZSTD_DCtx_s* Context { get; }
    }
}
