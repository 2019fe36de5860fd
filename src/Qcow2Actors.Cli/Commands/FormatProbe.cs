using Qcow2Actors.Format;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// qemu-img's format probe of a file: qcow2 when it starts with the qcow2 magic, raw otherwise (a file shorter
/// than the magic too). Format says what the magic is; this only reads the first bytes.
/// </summary>
internal static class FormatProbe
{
    /// <summary>True when the file at <paramref name="path"/> (which must exist) starts with the qcow2 magic.</summary>
    public static bool IsQcow2(string path)
    {
        Span<byte> first = stackalloc byte[4];
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        int n = RandomAccess.Read(file, first, 0);
        return Qcow2Header.HasMagic(first[..n]);
    }
}
