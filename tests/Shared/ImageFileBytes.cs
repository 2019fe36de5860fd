using System.Buffers.Binary;

namespace Qcow2Actors.Tests.Shared;

/// <summary>
/// Big-endian peeks and pokes into an image file at a byte offset, for tests that damage or
/// inspect on-disk fields directly, below every reader and writer under test.
/// </summary>
public static class ImageFileBytes
{
    public static ulong ReadU64(string path, long offset) => BinaryPrimitives.ReadUInt64BigEndian(ReadAt(path, offset, 8));

    public static uint ReadU32(string path, long offset) => BinaryPrimitives.ReadUInt32BigEndian(ReadAt(path, offset, 4));

    public static void WriteU64(string path, long offset, ulong value)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, value);
        WriteAt(path, offset, b);
    }

    public static void WriteU32(string path, long offset, uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        WriteAt(path, offset, b);
    }

    public static void WriteU16(string path, long offset, ushort value)
    {
        var b = new byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(b, value);
        WriteAt(path, offset, b);
    }

    public static byte[] ReadAt(string path, long offset, int count)
    {
        using var fs = File.OpenRead(path);
        fs.Position = offset;
        var b = new byte[count];
        fs.ReadExactly(b);
        return b;
    }

    public static void WriteAt(string path, long offset, byte[] data)
    {
        using var fs = File.OpenWrite(path);
        fs.Position = offset;
        fs.Write(data);
    }
}
