using System.Buffers.Binary;
using Qcow2Actors.Engine.Compression;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Compression;

/// <summary>
/// QEMU is the oracle: qemu-img writes compressed clusters, we find them by walking L1/L2
/// by hand (FORMAT.md §2, §6) and our codecs must inflate each to the guest bytes.
/// </summary>
public class QemuCompressedClusterTests
{
    [QemuTheory]
    [InlineData("zlib", 0, 16)]
    [InlineData("zstd", 1, 16)]
    [InlineData("zlib", 0, 12)]
    [InlineData("zstd", 1, 21)]
    public void Clusters_compressed_by_qemu_img_decompress_to_the_guest_data(string type, int expectedType, int clusterBits)
    {
        using var dir = new TempDir();
        var clusterSize = 1 << clusterBits;
        var guestSize = Math.Max(4 << 20, 3 * clusterSize);
        var raw = new byte[guestSize];
        for (var c = 0; c < guestSize / clusterSize; c++)
            CompressionCodecTests.Patterned(clusterSize, c).CopyTo(raw, c * clusterSize);
        File.WriteAllBytes(dir.File("guest.raw"), raw);
        QemuTools.QemuImg("convert", "-c", "-f", "raw", "-O", "qcow2",
            "-o", $"compression_type={type},cluster_size={clusterSize}",
            dir.File("guest.raw"), dir.File("c.qcow2")).EnsureSuccess();

        var image = File.ReadAllBytes(dir.File("c.qcow2"));
        Assert.Equal(0x514649FBu, BinaryPrimitives.ReadUInt32BigEndian(image));
        Assert.Equal(clusterBits, BinaryPrimitives.ReadInt32BigEndian(image.AsSpan(20)));
        var l1Size = BinaryPrimitives.ReadInt32BigEndian(image.AsSpan(36));
        var l1Offset = (long)BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan(40));
        var headerLength = BinaryPrimitives.ReadInt32BigEndian(image.AsSpan(100));
        var compressionType = headerLength > 104 ? image[104] : 0;
        Assert.Equal(expectedType, compressionType);
        var codec = CompressionCodecs.For(compressionType);

        var l2Entries = clusterSize / 8;
        var x = 62 - (clusterBits - 8);
        var cluster = new byte[clusterSize];
        var found = 0;
        for (var i = 0; i < l1Size; i++)
        {
            var l2Offset = (long)(BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan((int)(l1Offset + 8 * i))) & 0x00FFFFFFFFFFFE00UL);
            if (l2Offset == 0) continue;
            for (var j = 0; j < l2Entries; j++)
            {
                var e = BinaryPrimitives.ReadUInt64BigEndian(image.AsSpan((int)(l2Offset + 8 * j)));
                if ((e & (1UL << 62)) == 0) continue;
                var coffset = (long)(e & ((1UL << x) - 1));
                var nsect = (long)((e >> x) & ((1UL << (clusterBits - 8)) - 1));
                var readLen = (nsect + 1) * 512 - (coffset & 511);
                readLen = Math.Min(readLen, image.Length - coffset);
                codec.Decompress(image.AsSpan((int)coffset, (int)readLen), cluster);
                var guest = ((long)i * l2Entries + j) * clusterSize;
                Assert.True(raw.AsSpan((int)guest, clusterSize).SequenceEqual(cluster), $"guest cluster at {guest:X} differs");
                found++;
            }
        }
        Assert.Equal(guestSize / clusterSize, found);
    }
}
