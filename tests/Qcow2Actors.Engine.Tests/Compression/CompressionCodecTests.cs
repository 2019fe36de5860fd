using System.IO.Compression;
using Qcow2Actors.Engine.Compression;

namespace Qcow2Actors.Engine.Tests.Compression;

public class CompressionCodecTests
{
    public static TheoryData<int> Types => new() { 0, 1 };

    internal static byte[] Patterned(int size, int seed)
    {
        var data = new byte[size];
        for (var i = 0; i < size; i++) data[i] = (byte)((i / 7 * 31 + seed * 13 + (i % 251)) & 0xFF);
        var text = System.Text.Encoding.ASCII.GetBytes($"cluster {seed} says hello; ");
        for (var i = 0; i + text.Length <= size; i += 997) text.CopyTo(data, i);
        return data;
    }

    private static byte[] Compress(ICompressionCodec codec, byte[] cluster)
    {
        var output = new byte[cluster.Length];
        Assert.True(codec.TryCompress(cluster, output, out var written));
        return output[..written];
    }

    [Theory, MemberData(nameof(Types))]
    public void Compressed_cluster_decompresses_to_the_same_bytes(int type)
    {
        var codec = CompressionCodecs.For(type);
        Assert.Equal(type, codec.CompressionType);
        foreach (var size in new[] { 512, 4096, 65536, 2 * 1024 * 1024 })
        {
            var cluster = Patterned(size, size);
            var compressed = Compress(codec, cluster);
            Assert.True(compressed.Length < size - 1);
            var back = new byte[size];
            codec.Decompress(compressed, back);
            Assert.Equal(cluster, back);
        }
    }

    [Theory, MemberData(nameof(Types))]
    public void Incompressible_cluster_is_refused_so_it_is_stored_plain(int type)
    {
        var cluster = new byte[65536];
        new Random(42).NextBytes(cluster);
        var output = new byte[cluster.Length * 2];
        Assert.False(CompressionCodecs.For(type).TryCompress(cluster, output, out var written));
        Assert.Equal(0, written);
    }

    [Theory, MemberData(nameof(Types))]
    public void A_result_longer_than_the_output_buffer_is_refused(int type)
    {
        var cluster = Patterned(65536, 3);
        Assert.False(CompressionCodecs.For(type).TryCompress(cluster, new byte[16], out _));
    }

    [Theory, MemberData(nameof(Types))]
    public void Bytes_after_the_stream_are_ignored(int type)
    {
        var codec = CompressionCodecs.For(type);
        var cluster = Patterned(65536, 5);
        var compressed = Compress(codec, cluster);
        var withTail = compressed.Concat(Enumerable.Repeat((byte)0xA5, 700)).ToArray();
        var back = new byte[cluster.Length];
        codec.Decompress(withTail, back);
        Assert.Equal(cluster, back);
    }

    [Theory, MemberData(nameof(Types))]
    public void A_truncated_stream_fails_with_one_line_naming_the_codec(int type)
    {
        var codec = CompressionCodecs.For(type);
        var compressed = Compress(codec, Patterned(65536, 6));
        var e = Assert.Throws<InvalidDataException>(() => codec.Decompress(compressed.AsSpan(0, compressed.Length / 2), new byte[65536]));
        Assert.StartsWith(codec.Name + ":", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Throws<InvalidDataException>(() => codec.Decompress([], new byte[512]));
    }

    [Theory, MemberData(nameof(Types))]
    public void A_stream_shorter_than_the_cluster_is_an_error(int type)
    {
        var codec = CompressionCodecs.For(type);
        var compressed = Compress(codec, Patterned(4096, 7));
        var e = Assert.Throws<InvalidDataException>(() => codec.Decompress(compressed, new byte[8192]));
        Assert.Contains("8192", e.Message);
    }

    [Fact]
    public void Zlib_is_raw_deflate_not_a_zlib_stream()
    {
        var cluster = Patterned(65536, 8);
        var ours = Compress(CompressionCodecs.Zlib, cluster);
        using (var inflater = new DeflateStream(new MemoryStream(ours), CompressionMode.Decompress))
        {
            var back = new byte[cluster.Length];
            inflater.ReadExactly(back);
            Assert.Equal(cluster, back);
        }
        var headered = new MemoryStream();
        using (var z = new ZLibStream(headered, CompressionLevel.Optimal, leaveOpen: true)) z.Write(cluster);
        Assert.Throws<InvalidDataException>(() => CompressionCodecs.Zlib.Decompress(headered.ToArray(), new byte[cluster.Length]));
    }

    [Fact]
    public void Zstd_decodes_several_frames_until_the_cluster_is_full()
    {
        var cluster = Patterned(65536, 9);
        using var c = new ZstdSharp.Compressor();
        var two = c.Wrap(cluster.AsSpan(0, 20000)).ToArray().Concat(c.Wrap(cluster.AsSpan(20000)).ToArray()).ToArray();
        var back = new byte[cluster.Length];
        CompressionCodecs.Zstd.Decompress(two, back);
        Assert.Equal(cluster, back);
    }

    [Fact]
    public void Zstd_frame_still_open_when_the_cluster_is_full_is_an_error()
    {
        using var c = new ZstdSharp.Compressor();
        var frame = c.Wrap(Patterned(65536 + 100, 10)).ToArray();
        var e = Assert.Throws<InvalidDataException>(() => CompressionCodecs.Zstd.Decompress(frame, new byte[65536]));
        Assert.Contains("past the end", e.Message);
    }

    [Fact]
    public void Zstd_writes_one_frame_with_the_standard_magic()
    {
        var compressed = Compress(CompressionCodecs.Zstd, Patterned(65536, 11));
        Assert.Equal(new byte[] { 0x28, 0xB5, 0x2F, 0xFD }, compressed[..4]);
    }

    [Fact]
    public void Unknown_compression_type_is_refused()
    {
        var e = Assert.Throws<NotSupportedException>(() => CompressionCodecs.For(2));
        Assert.Contains("compression_type 2", e.Message);
    }

    [Theory, MemberData(nameof(Types))]
    public void Decompression_allocates_little_once_warm(int type)
    {
        var codec = CompressionCodecs.For(type);
        var cluster = Patterned(65536, 12);
        var compressed = Compress(codec, cluster);
        var back = new byte[cluster.Length];
        for (var i = 0; i < 5; i++) codec.Decompress(compressed, back);
        var before = GC.GetAllocatedBytesForCurrentThread();
        const int rounds = 20;
        for (var i = 0; i < rounds; i++) codec.Decompress(compressed, back);
        var perCall = (GC.GetAllocatedBytesForCurrentThread() - before) / rounds;
        // A cluster is 64 KiB; the budget is for a few small objects (stream wrappers), never a buffer.
        Assert.True(perCall < 2048, $"{codec.Name} allocated {perCall} bytes per decompression");
    }
}
