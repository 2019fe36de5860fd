using System.Buffers.Binary;

namespace Qcow2Actors.Engine.Tests.Check;

/// <summary>
/// The smallest v3 image the checker and repair tests start from, laid out byte by byte rather
/// than by our own writer, so a writer bug cannot hide a checker bug: 64 KiB clusters, 16-bit
/// refcounts, 1 MiB virtual size; cluster 0 header, 1 refcount table, 2 refcount block (every
/// cluster at refcount 1), 3 L1 (one entry, copied), 4 the L2 table it points to (left empty for
/// the test to map).
/// </summary>
internal static class HandBuiltImage
{
    public const int Cluster = 65536;
    public const int L2Cluster = 4;
    public const ulong Copied = 1UL << 63;

    public static byte[] Create(int clusters)
    {
        var img = new byte[clusters * Cluster];
        var h = img.AsSpan();
        BinaryPrimitives.WriteUInt32BigEndian(h, 0x514649FB);
        BinaryPrimitives.WriteUInt32BigEndian(h[4..], 3);
        BinaryPrimitives.WriteUInt32BigEndian(h[20..], 16);
        BinaryPrimitives.WriteUInt64BigEndian(h[24..], 1 << 20);
        BinaryPrimitives.WriteUInt32BigEndian(h[36..], 1);
        BinaryPrimitives.WriteUInt64BigEndian(h[40..], 3 * Cluster);
        BinaryPrimitives.WriteUInt64BigEndian(h[48..], 1 * Cluster);
        BinaryPrimitives.WriteUInt32BigEndian(h[56..], 1);
        BinaryPrimitives.WriteUInt32BigEndian(h[96..], 4);
        BinaryPrimitives.WriteUInt32BigEndian(h[100..], 104);
        BinaryPrimitives.WriteUInt64BigEndian(h[Cluster..], 2 * Cluster);
        for (var c = 0; c < clusters; c++) SetRefcount(img, c, 1);
        BinaryPrimitives.WriteUInt64BigEndian(h[(3 * Cluster)..], Copied | (L2Cluster * Cluster));
        return img;
    }

    public static void SetRefcount(byte[] img, long cluster, ushort value) =>
        BinaryPrimitives.WriteUInt16BigEndian(img.AsSpan((int)(2 * Cluster + 2 * cluster)), value);
}
