using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Amend;

/// <summary>
/// Shrinks a closed qcow2 image as <c>qemu-img resize --shrink</c> does: the clusters past the new
/// end are discarded (their references dropped; shared ones stay for the snapshots that hold them),
/// the L1 table is cut to what the new size needs, and the file is cut after its last used cluster.
/// Order: entries past the end in the last kept L2 table go first (data the user asked to drop; a
/// table a snapshot shares is copied instead of changed);
/// the new, shorter L1 is written to new clusters; one header write switches size and L1 together;
/// only then are references dropped, so a crash leaks clusters at worst.
/// </summary>
public static class ImageShrinker
{
    private const string Verb = "shrink the image";

    /// <summary>Shrinks the image at <paramref name="path"/> (opened under the "write" lock) to <paramref name="newSize"/> bytes.</summary>
    /// <param name="path">The qcow2 image.</param>
    /// <param name="newSize">The new virtual size: positive, a multiple of 512, below the current size.</param>
    /// <exception cref="ImageAmendException">Refused; nothing was written.</exception>
    /// <exception cref="SnapshotEditException">The image is dirty, corrupt or has a pending journal.</exception>
    public static void Shrink(string path, long newSize)
    {
        using var device = ExclusiveImageFile.Open(path, writable: true);
        Shrink(device, newSize);
    }

    internal static void Shrink(IBlockDevice device, long newSize)
    {
        var s = SnapshotSession.Open(device, forWrite: true, Verb);
        var h = s.Header;
        if (s.Snapshots.Count > 0 && h.Version < 3) throw new ImageAmendException("Can't resize a v2 image which has snapshots");
        if (newSize <= 0) throw new ImageAmendException("New image size must be positive");
        if (newSize % 512 != 0) throw new ImageAmendException("The new size must be a multiple of 512");
        if (newSize >= h.Size) throw new ImageAmendException($"{newSize} bytes is not smaller than the image's {h.Size}");
        if (s.Block.Bitmaps is not null)
            throw new ImageAmendException("Shrinking an image with persistent bitmaps is not supported by q2a (remove them first)");
        if (h.HasExternalDataFile)
            throw new ImageAmendException("Shrinking an image with an external data file is not supported by q2a");

        int cb = h.ClusterBits;
        long cs = 1L << cb;
        long cut = (newSize + cs - 1) & ~(cs - 1);
        int newL1Size = (int)Qcow2Header.RequiredL1Size(newSize, cb, h.HasExtendedL2);
        var l1 = s.ReadL1(h.L1TableOffset, h.L1Size, "active L1 table");
        var decrements = new Dictionary<long, long>();
        // Whole L2 tables past the new L1 size.
        s.AddTree([.. l1.Skip(newL1Size)], -1, decrements);
        s.AddClusters(h.L1TableOffset, h.L1Size * 8L, -1, decrements);
        // The entries past the cut in the last L2 table kept.
        (long Offset, byte[] Table)? partial = null;
        int first = (int)((cut >> cb) % h.L2Entries);
        if (newL1Size > 0 && newL1Size <= l1.Length && first != 0 && (long)(l1[newL1Size - 1] & L1Entry.OffsetMask) is var l2 and not 0)
        {
            var table = new byte[cs];
            if (device.Read(table, l2) < table.Length)
                throw new Qcow2ImageCorruptException($"L1 entry {newL1Size - 1} points to an L2 table at 0x{l2:X}, past the end of {device.Name}");
            var kept = (byte[])table.Clone();
            for (int j = first; j < h.L2Entries; j++) L2Table.WriteEntry(kept, j, h.HasExtendedL2, default);
            if (!kept.AsSpan().SequenceEqual(table))
            {
                s.AddL2Entries(table, l2, first, -1, decrements);
                partial = (l2, kept);
            }
        }
        s.CheckDeltas(decrements, Verb);

        var newL1 = l1.Take(newL1Size).ToArray();
        Array.Resize(ref newL1, newL1Size);
        if (partial is { } shared && s.Refcounts.Get(shared.Offset >> cb) != 1)
        {
            // A snapshot shares the last kept L2 table: the disk gets its own copy (copy on write),
            // and drops its reference to the shared one instead of changing it.
            long copy = s.AllocateBytes(cs);
            Add(decrements, shared.Offset >> cb, -1);
            newL1[newL1Size - 1] = (ulong)copy | L1Entry.CopiedFlag;
            partial = (copy, shared.Table);
        }
        long newL1Offset = s.AllocateBytes(newL1Size * 8L);
        s.KeepOldRefcountTable();
        // 1. The last kept L2 table without its entries past the end; the new L1 and its allocation.
        if (partial is { } p) device.Write(p.Table, p.Offset);
        s.WriteL1(newL1Offset, newL1, copied: true);
        s.Refcounts.WriteBack();
        device.Flush();
        // 2. One header write: size, L1 offset and L1 size together; then drop the references the image no longer holds.
        s.SwitchActiveL1(newSize, newL1Offset, newL1Size, decrements);
        // 3. Cut the file after its last used cluster.
        long last = LastUsedCluster(s, device.Length >> cb);
        if ((last + 1) * cs < device.Length)
        {
            device.SetLength((last + 1) * cs);
            device.Flush();
        }
    }

    private static void Add(Dictionary<long, long> deltas, long cluster, long delta) =>
        deltas[cluster] = deltas.GetValueOrDefault(cluster) + delta;

    private static long LastUsedCluster(SnapshotSession s, long clusters)
    {
        for (long c = clusters; c > 0; c--)
            if (s.Refcounts.Get(c) != 0) return c;
        return 0;
    }
}
