using System.Buffers.Binary;

namespace Qcow2Actors.Format.Tests;

/// <summary>Small helpers to build and patch on-disk bytes in tests.</summary>
internal static class Bytes
{
    public static byte[] Header(Qcow2Header h, int size = 4096)
    {
        var b = new byte[size];
        h.Write(b);
        return b;
    }

    public static byte[] ValidV3(int clusterBits = 16, long size = 1L << 30) =>
        Header(Qcow2Header.CreateNew(size, clusterBits), 1 << clusterBits);

    public static void U32(byte[] b, int at, uint v) => BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(at), v);
    public static void U64(byte[] b, int at, ulong v) => BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(at), v);
    public static void U16(byte[] b, int at, ushort v) => BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(at), v);

    public static byte[] Hex(string hex) => Convert.FromHexString(hex.Replace(" ", "", StringComparison.Ordinal));
}
