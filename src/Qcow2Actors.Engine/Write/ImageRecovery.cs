using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// What opening an image for writing does to it before its tables are loaded: replay a pending
/// journal in place, clear the dirty and journal-pending bits
/// and make every refcount exact. One implementation for both users: the write open (on the
/// image file) and read-only opens of a journal-pending image (on a copy-on-write overlay, so
/// readers see byte for byte what <c>q2a recover</c> will leave, and nothing is written).
/// </summary>
internal static class ImageRecovery
{
    private const int MaxCluster0Bytes = 2 * 1024 * 1024;
    private const int FirstRead = 4096;

    /// <summary>Reads the header (bit 63 accepted) from cluster 0 of <paramref name="device"/>.</summary>
    public static ImageHeaderBlock ReadHeader(IBlockDevice device)
    {
        // Usually the first 4 KiB hold all Read looks at; a 2 MiB cluster 0 is read only when they do not.
        var first = new byte[Math.Min(FirstRead, device.Length)];
        var got = device.Read(first, 0);
        if (ImageHeaderBlock.UsedLength(first.AsSpan(0, got)) >= 0)
            return ImageHeaderBlock.Read(first.AsSpan(0, got), IncompatibleFeatures.KnownToQcow2Actors);
        var cluster0 = new byte[Math.Min(MaxCluster0Bytes, device.Length)];
        device.Read(cluster0, 0);
        return ImageHeaderBlock.Read(cluster0, IncompatibleFeatures.KnownToQcow2Actors);
    }

    /// <summary>The message every refusal of a pending image whose journal is gone carries.</summary>
    public static string MissingJournalMessage(string path) =>
        $"'{path}' has journal records pending but its journal (by default '{path}.journal') is missing; " +
        "run 'q2a recover --rebuild' to rebuild from what the image holds (writes since the last checkpoint are lost)";

    /// <summary>
    /// Recovers the image on <paramref name="device"/> in place (the caller owns durability: every
    /// step that must be ordered flushes). Returns the header as it now is on the device.
    /// </summary>
    /// <param name="device">The image (the file for a write open, an overlay for a read-only one).</param>
    /// <param name="path">The image's name in messages.</param>
    /// <param name="batches">The journal's batches, in order (none when the journal is missing).</param>
    /// <param name="rebuildWithoutJournal">Accept a missing journal (refcounts rebuilt from the tables).</param>
    /// <param name="keepCorrupt">
    /// For an image marked corrupt (which a write open refuses): replay the journal only, clear the
    /// dirty and journal-pending bits and keep the corrupt bit, leaving the rest to <c>check -r all</c>.
    /// </param>
    /// <exception cref="IOException">Marked corrupt, the journal is missing, or refcounts could not be repaired.</exception>
    public static ImageHeaderBlock Recover(IBlockDevice device, string path, IReadOnlyList<JournalBatch> batches, bool rebuildWithoutJournal,
        bool keepCorrupt = false)
    {
        var block = ReadHeader(device);
        var h = block.Header;
        if (h.IsCorrupt && !keepCorrupt)
            throw new IOException($"'{path}' is marked corrupt (incompatible bit 1); repair it with 'q2a check -r all' before writing");
        if (h.IsCorrupt)
        {
            // The corrupt mark stopped writes, not the journaled tables, which are sound: replay them.
            if (h.IsJournalPending)
            {
                if (batches.Count == 0 && !rebuildWithoutJournal) throw new IOException(MissingJournalMessage(path));
                RecordApplier.Apply(device, block, batches);
                device.Flush();
            }
            h.IncompatibleFeatures &= ~(IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending);
            HeaderWriter.Write(device, block);
            device.Flush();
            return block;
        }
        if (h.IsJournalPending)
        {
            // The journal always holds a message before the header says "pending" (JournalActor), and a
            // checkpoint clears the header before it truncates: an empty journal here was lost.
            if (batches.Count == 0 && !rebuildWithoutJournal) throw new IOException(MissingJournalMessage(path));
            RecordApplier.Apply(device, block, batches);
            device.Flush();
            // Bitmaps the journal proves tracked become consistent; the header write below switches to them.
            Bitmaps.BitmapRecovery.Recover(device, block, batches);
        }
        const AutoclearFeatures known = AutoclearFeatures.RawExternalData | AutoclearFeatures.Bitmaps;
        bool wasDirty = h.IsDirty || h.IsJournalPending;
        if (wasDirty || (h.AutoclearFeatures & ~known) != 0)
        {
            h.AutoclearFeatures &= known;
            // The tables are in place and durable; what a crash can still have left is leaked
            // clusters (allocations whose records did not make it), which the repair below removes.
            h.IncompatibleFeatures &= ~(IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending);
            if (h.IncompatibleFeatures == IncompatibleFeatures.None) V2Promotion.Restore(block);
            HeaderWriter.Write(device, block);
            device.Flush();
        }
        if (wasDirty)
        {
            // Our journal's leftovers (leaks from allocations whose records did not make it),
            // or an image QEMU left dirty with lazy refcounts: make every refcount exact.
            var repair = Check.ImageRepair.Repair(device, path, Check.RepairMode.All);
            if (repair.ExitCode != 0)
                throw new IOException($"'{path}': refcounts could not be repaired after an unclean shutdown: " +
                    (repair.FailureReason ?? $"{repair.After.Corruptions} corruptions remain") + "; try 'q2a check -r all'");
            device.Flush();
        }
        return block;
    }
}
