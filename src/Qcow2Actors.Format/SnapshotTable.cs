namespace Qcow2Actors.Format;

/// <summary>
/// The snapshot table (FORMAT.md §8): <c>nb_snapshots</c> variable-size entries, each starting at
/// an 8-byte aligned offset from <c>snapshots_offset</c>.
/// </summary>
public static class SnapshotTable
{
    /// <summary>QEMU's limit on the table size in bytes.</summary>
    public const long MaxTableSize = 64L * 1024 * 1024;

    /// <summary>
    /// Decodes <paramref name="count"/> entries, enforcing QEMU's limits (extra data ≤ 1024 bytes,
    /// table ≤ 64 MiB, v3 extra data ≥ 16 bytes) and that every entry lies inside <paramref name="table"/>.
    /// </summary>
    /// <param name="table">Bytes from <c>snapshots_offset</c> (at least the table size).</param>
    /// <param name="count">nb_snapshots.</param>
    /// <param name="version">Image version.</param>
    /// <param name="baseOffset">File offset of the table (snapshots_offset) for error messages.</param>
    /// <exception cref="Qcow2FormatException">An entry is malformed or the table is too big.</exception>
    public static List<SnapshotEntry> Read(ReadOnlySpan<byte> table, int count, int version, long baseOffset = 0) =>
        Read(table, count, version, baseOffset, out _);

    /// <summary>
    /// Decodes <paramref name="count"/> entries as <see cref="Read(ReadOnlySpan{byte}, int, int, long)"/> does, and
    /// says how many bytes they occupy as stored (entries may carry more or less extra data than we write).
    /// </summary>
    /// <param name="table">Bytes from <c>snapshots_offset</c> (at least the table size).</param>
    /// <param name="count">nb_snapshots.</param>
    /// <param name="version">Image version.</param>
    /// <param name="baseOffset">File offset of the table (snapshots_offset) for error messages.</param>
    /// <param name="storedSize">Bytes from the table's start to the end of its last entry.</param>
    /// <exception cref="Qcow2FormatException">An entry is malformed or the table is too big.</exception>
    public static List<SnapshotEntry> Read(ReadOnlySpan<byte> table, int count, int version, long baseOffset, out long storedSize) =>
        Read(table, count, version, baseOffset, ValidationProfile.Open, out storedSize);

    /// <summary>
    /// The one snapshot table reader: decodes <paramref name="count"/> entries under the rules of
    /// <paramref name="profile"/> (see <see cref="SnapshotEntry.Read(ReadOnlySpan{byte}, int, long, ValidationProfile, int, out SnapshotEntry)"/>).
    /// An entry running past <paramref name="table"/> is reported as <see cref="Qcow2Rule.SnapshotEntryTruncated"/>,
    /// so a caller that read only part of the table can read more and try again.
    /// </summary>
    /// <param name="table">Bytes from <c>snapshots_offset</c>.</param>
    /// <param name="count">nb_snapshots.</param>
    /// <param name="version">Image version.</param>
    /// <param name="baseOffset">File offset of the table (snapshots_offset) for error messages.</param>
    /// <param name="profile">Who reads.</param>
    /// <param name="storedSize">Bytes from the table's start to the end of its last entry.</param>
    /// <exception cref="Qcow2FormatException">An entry is malformed or the table is too big.</exception>
    public static List<SnapshotEntry> Read(ReadOnlySpan<byte> table, int count, int version, long baseOffset, ValidationProfile profile, out long storedSize)
    {
        if ((uint)count > Qcow2Header.MaxSnapshots)
            throw new Qcow2FormatException(Qcow2Rule.SnapshotTableTooLarge, "nb_snapshots", Qcow2Header.NbSnapshotsOffset, $"{count} snapshots exceed QEMU's limit of {Qcow2Header.MaxSnapshots}", (uint)count);
        var list = new List<SnapshotEntry>(count);
        long off = 0;
        for (int i = 0; i < count; i++)
        {
            off = Align8(off);
            if (off > table.Length)
                throw new Qcow2FormatException(Qcow2Rule.SnapshotEntryTruncated, "snapshot table", baseOffset + off, $"entry {i} starts past the {table.Length} bytes given", (ulong)off, i);
            int used = SnapshotEntry.Read(table[(int)off..], version, baseOffset + off, profile, i, out var entry);
            off += used;
            if (off > MaxTableSize)
                throw new Qcow2FormatException(Qcow2Rule.SnapshotTableTooBig, "snapshot table", baseOffset + off - used, $"entry {i} ends at {off} bytes, beyond QEMU's table limit of {MaxTableSize}", (ulong)off, i);
            list.Add(entry);
        }
        storedSize = off;
        return list;
    }

    /// <summary>
    /// Largest byte count a table can need to be read in full: QEMU's 64 MiB limit plus one maximal entry
    /// (the entry that crosses the limit must be read before the limit can be reported).
    /// </summary>
    public const long MaxReadSize = MaxTableSize + SnapshotEntry.FixedSize + SnapshotEntry.MaxExtraDataSize + 2 * ushort.MaxValue + 8;

    /// <summary>Bytes the table occupies when written (the last entry is not padded, as QEMU counts it).</summary>
    /// <param name="entries">The entries.</param>
    public static long ComputeSize(IEnumerable<SnapshotEntry> entries)
    {
        long off = 0;
        foreach (var e in entries) off = Align8(off) + e.EncodedSize;
        return off;
    }

    /// <summary>Encodes the table; padding between entries is zero.</summary>
    /// <param name="entries">The entries in table order.</param>
    /// <param name="destination">At least <see cref="ComputeSize"/> bytes.</param>
    /// <returns>Bytes written.</returns>
    /// <exception cref="InvalidOperationException">The table would exceed 64 MiB or an entry cannot be encoded.</exception>
    public static int Write(IReadOnlyList<SnapshotEntry> entries, Span<byte> destination)
    {
        long size = ComputeSize(entries);
        if (size > MaxTableSize) throw new InvalidOperationException($"snapshot table of {size} bytes exceeds QEMU's limit of {MaxTableSize}");
        if (destination.Length < size) throw new ArgumentException($"the snapshot table needs {size} bytes", nameof(destination));
        int off = 0;
        foreach (var e in entries)
        {
            int aligned = (int)Align8(off);
            destination[off..aligned].Clear();
            off = aligned + e.Write(destination[aligned..]);
        }
        return off;
    }

    private static long Align8(long v) => (v + 7) & ~7L;
}
