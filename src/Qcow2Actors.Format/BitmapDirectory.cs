namespace Qcow2Actors.Format;

/// <summary>The bitmap directory (FORMAT.md §9): <c>nb_bitmaps</c> entries filling exactly <c>bitmap_directory_size</c> bytes.</summary>
public static class BitmapDirectory
{
    /// <summary>
    /// Decodes <paramref name="count"/> entries from exactly the directory bytes, refusing
    /// truncated entries, a size that does not match the entries, and duplicate names.
    /// </summary>
    /// <param name="directory">The directory (bitmap_directory_size bytes).</param>
    /// <param name="count">nb_bitmaps from the extension.</param>
    /// <param name="baseOffset">File offset of the directory for error messages.</param>
    /// <exception cref="Qcow2FormatException">Malformed directory.</exception>
    public static List<BitmapDirectoryEntry> Read(ReadOnlySpan<byte> directory, int count, long baseOffset = 0)
    {
        if (count is < 1 or > BitmapsExtension.MaxBitmaps)
            throw new Qcow2FormatException("nb_bitmaps", baseOffset, $"{count} is outside 1..{BitmapsExtension.MaxBitmaps}");
        var list = new List<BitmapDirectoryEntry>(count);
        var names = new HashSet<string>(StringComparer.Ordinal);
        int off = 0;
        for (int i = 0; i < count; i++)
        {
            int at = off;
            off += BitmapDirectoryEntry.Read(directory[off..], baseOffset + off, out var e);
            if (!names.Add(e.Name))
                throw new Qcow2FormatException("bitmap name", baseOffset + at, $"name '{e.Name}' is used twice");
            list.Add(e);
        }
        if (off != directory.Length)
            throw new Qcow2FormatException("bitmap_directory_size", baseOffset, $"{count} entries use {off} bytes but the directory has {directory.Length}");
        return list;
    }

    /// <summary>Directory size in bytes (each entry padded to 8).</summary>
    /// <param name="entries">The entries.</param>
    public static int ComputeSize(IEnumerable<BitmapDirectoryEntry> entries) => entries.Sum(e => e.EncodedSize);

    /// <summary>Encodes the directory.</summary>
    /// <param name="entries">The entries.</param>
    /// <param name="destination">At least <see cref="ComputeSize"/> bytes.</param>
    /// <returns>Bytes written.</returns>
    public static int Write(IReadOnlyList<BitmapDirectoryEntry> entries, Span<byte> destination)
    {
        int off = 0;
        foreach (var e in entries) off += e.Write(destination[off..]);
        return off;
    }
}
