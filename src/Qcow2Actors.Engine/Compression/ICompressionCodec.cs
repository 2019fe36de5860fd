namespace Qcow2Actors.Engine.Compression;

/// <summary>
/// Compresses and decompresses whole guest clusters the way qcow2 stores them (FORMAT.md §10).
/// Implementations are stateless singletons safe for concurrent use.
/// </summary>
public interface ICompressionCodec
{
    /// <summary>The header's <c>compression_type</c> value: 0 zlib, 1 zstd.</summary>
    byte CompressionType { get; }

    /// <summary>Short name for messages ("zlib", "zstd").</summary>
    string Name { get; }

    /// <summary>
    /// Compresses one cluster into <paramref name="output"/>. Returns false, with
    /// <paramref name="written"/> = 0, when the result would not fit in
    /// <c>min(output.Length, cluster.Length − 1)</c> bytes: as in QEMU, such a cluster is then
    /// stored uncompressed, because a compressed copy would save nothing.
    /// </summary>
    bool TryCompress(ReadOnlySpan<byte> cluster, Span<byte> output, out int written);

    /// <summary>
    /// Decompresses <paramref name="input"/> (the bytes from the compressed descriptor's
    /// offset for its sector count; the tail past the stream may belong to another cluster
    /// and is ignored) into exactly <c>cluster.Length</c> bytes.
    /// </summary>
    /// <exception cref="InvalidDataException">The stream is corrupt or yields a different length than <c>cluster.Length</c>.</exception>
    void Decompress(ReadOnlySpan<byte> input, Span<byte> cluster);
}

/// <summary>Finds the codec for an image's <c>compression_type</c>.</summary>
public static class CompressionCodecs
{
    /// <summary>Raw DEFLATE (compression_type 0).</summary>
    public static ICompressionCodec Zlib { get; } = new ZlibCodec();

    /// <summary>Zstandard frames (compression_type 1).</summary>
    public static ICompressionCodec Zstd { get; } = new ZstdCodec();

    /// <summary>The codec for header byte 104 (0 zlib, 1 zstd).</summary>
    /// <exception cref="NotSupportedException">Any other value; the opener should already have refused the image.</exception>
    public static ICompressionCodec For(int compressionType) => compressionType switch
    {
        0 => Zlib,
        1 => Zstd,
        _ => throw new NotSupportedException($"compression_type {compressionType} is not supported (0 zlib, 1 zstd)"),
    };
}
