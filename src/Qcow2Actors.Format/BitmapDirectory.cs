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
    /// <param name="profile">
    /// Outside <see cref="ValidationProfile.Open"/> the directory is read as QEMU loads it: each entry
    /// must fit and pass QEMU's entry checks (<see cref="Qcow2Rule.BitmapEntryInvalid"/> names the
    /// first that does not); names are not required to be unique nor the size to match exactly.
    /// </param>
    /// <param name="clusterBits">Cluster bits, for QEMU's table alignment check (outside the open profile).</param>
    public static List<BitmapDirectoryEntry> Read(ReadOnlySpan<byte> directory, int count, long baseOffset = 0,
        ValidationProfile profile = ValidationProfile.Open, int clusterBits = Qcow2Header.MinClusterBits)
    {
        if (count is < 1 or > BitmapsExtension.MaxBitmaps)
            throw new Qcow2FormatException(count < 1 ? Qcow2Rule.BitmapCountZero : Qcow2Rule.BitmapCountTooLarge, "nb_bitmaps", baseOffset, $"{count} is outside 1..{BitmapsExtension.MaxBitmaps}", (ulong)count);
        if (profile != ValidationProfile.Open) return ReadAsQemu(directory, count, baseOffset, profile, clusterBits);
        var list = new List<BitmapDirectoryEntry>(count);
        var names = new HashSet<string>(StringComparer.Ordinal);
        int off = 0;
        for (int i = 0; i < count; i++)
        {
            int at = off;
            off += BitmapDirectoryEntry.Read(directory[off..], baseOffset + off, out var e);
            if (!names.Add(e.Name))
                throw new Qcow2FormatException(Qcow2Rule.BitmapNameDuplicate, "bitmap name", baseOffset + at, $"name '{e.Name}' is used twice", index: i);
            list.Add(e);
        }
        if (off != directory.Length)
            throw new Qcow2FormatException(Qcow2Rule.BitmapDirectorySizeMismatch, "bitmap_directory_size", baseOffset, $"{count} entries use {off} bytes but the directory has {directory.Length}", (ulong)directory.Length);
        return list;
    }

    private static List<BitmapDirectoryEntry> ReadAsQemu(ReadOnlySpan<byte> directory, int count, long baseOffset, ValidationProfile profile, int clusterBits)
    {
        var list = new List<BitmapDirectoryEntry>(Math.Min(count, 1024));
        int pos = 0;
        for (int i = 0; i < count; i++)
        {
            long at = baseOffset + pos;
            if (pos + BitmapDirectoryEntry.FixedSize > directory.Length)
                throw new Qcow2FormatException(Qcow2Rule.BitmapEntryTruncated, "bitmap directory", at, $"entry {i} runs past the directory size", index: i);
            var e = BitmapDirectoryEntry.DecodeFields(directory[pos..], out ulong tableOffset, out uint tableSize, out uint extra, out int nameSize);
            long entrySize = ((long)BitmapDirectoryEntry.FixedSize + extra + nameSize + 7) & ~7L;
            if (pos + entrySize > directory.Length)
                throw new Qcow2FormatException(Qcow2Rule.BitmapEntryTruncated, "bitmap directory", at, $"entry {i} runs past the directory size", index: i);
            if ((tableOffset & ((1UL << clusterBits) - 1)) != 0 || tableSize > BitmapDirectoryEntry.MaxTableSize
                || e.Type != BitmapDirectoryEntry.DirtyTrackingType
                || e.GranularityBits is < BitmapDirectoryEntry.MinGranularityBits or > BitmapDirectoryEntry.MaxGranularityBits
                || (e.Flags & BitmapFlags.Reserved) != 0 || nameSize is 0 or > BitmapDirectoryEntry.MaxNameSize
                || (extra != 0 && (e.Flags & BitmapFlags.ExtraDataCompatible) == 0))
                throw new Qcow2FormatException(Qcow2Rule.BitmapEntryInvalid, "bitmap directory entry", at, $"entry {i} is not one QEMU would load", index: i);
            e.ExtraData = directory.Slice(pos + BitmapDirectoryEntry.FixedSize, (int)extra).ToArray();
            e.Name = Strings.Decode(directory.Slice(pos + BitmapDirectoryEntry.FixedSize + (int)extra, nameSize), "bitmap name", at + BitmapDirectoryEntry.FixedSize + extra, profile);
            list.Add(e);
            pos += (int)entrySize;
        }
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
