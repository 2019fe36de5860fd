using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Snapshots;

/// <summary>
/// Internal snapshots of a closed qcow2 image, as <c>qemu-img snapshot -l|-c|-a|-d</c> edits them
/// (FORMAT.md §8). A write operation opens the file exclusively, refuses an image that is dirty,
/// corrupt or has a pending journal, plans every allocation and refcount change in memory and
/// checks it (no refcount above its width's maximum, none below zero) before the first write, then
/// writes in an order where a crash can only leak clusters: refcount increments are durable before
/// anything on disk points at them, one header write switches to the new tables, and decrements
/// come after that switch.
/// </summary>
public static class SnapshotEditor
{
    /// <summary>
    /// Lists the snapshots of the image at <paramref name="path"/> in table order. The image is opened
    /// read-only, so a dirty or corrupt image lists as qemu-img lists it; a pending journal is refused
    /// (the tables on disk may be stale).
    /// </summary>
    /// <param name="path">The qcow2 image.</param>
    /// <exception cref="SnapshotEditException">The image has a pending journal.</exception>
    /// <exception cref="Qcow2FormatException">The header or snapshot table is malformed.</exception>
    /// <param name="forceShare">Share the image with a writer (qemu-img's -U) instead of taking the shared read lock.</param>
    public static IReadOnlyList<SnapshotEntry> List(string path, bool forceShare = false)
    {
        using var device = ExclusiveImageFile.Open(path, writable: false, forceShare);
        return List(device);
    }

    /// <summary>
    /// Creates snapshot <paramref name="name"/> of the current disk: the next numeric ID, the time now,
    /// no VM state, the current virtual size. Names need not be unique (as in qemu-img).
    /// </summary>
    /// <param name="path">The qcow2 image (closed; opened exclusively).</param>
    /// <param name="name">Snapshot name (tag), at most 255 UTF-8 bytes.</param>
    /// <returns>The entry written.</returns>
    /// <exception cref="SnapshotEditException">Refused before anything was written.</exception>
    /// <exception cref="Qcow2ImageCorruptException">A table the snapshot would share is damaged.</exception>
    public static SnapshotEntry Create(string path, string name)
    {
        using var device = ExclusiveImageFile.Open(path, writable: true);
        return Create(device, name, DateTimeOffset.UtcNow);
    }

    /// <summary>
    /// Reverts the disk to snapshot <paramref name="idOrName"/> (an ID first, then a name, as qemu-img
    /// looks it up); the virtual size becomes the snapshot's. The snapshot stays in the table.
    /// </summary>
    /// <param name="path">The qcow2 image (closed; opened exclusively).</param>
    /// <param name="idOrName">Snapshot ID or name.</param>
    /// <returns>The snapshot applied.</returns>
    /// <exception cref="SnapshotEditException">Refused before anything was written.</exception>
    /// <exception cref="Qcow2ImageCorruptException">A table of the snapshot or of the disk is damaged.</exception>
    public static SnapshotEntry Apply(string path, string idOrName)
    {
        using var device = ExclusiveImageFile.Open(path, writable: true);
        return Apply(device, idOrName);
    }

    /// <summary>
    /// Deletes the first snapshot named <paramref name="name"/> (by name only, as qemu-img snapshot -d)
    /// and frees what only it referenced.
    /// </summary>
    /// <param name="path">The qcow2 image (closed; opened exclusively).</param>
    /// <param name="name">Snapshot name.</param>
    /// <returns>The snapshot deleted.</returns>
    /// <exception cref="SnapshotEditException">Refused before anything was written.</exception>
    /// <exception cref="Qcow2ImageCorruptException">A table of the snapshot is damaged.</exception>
    public static SnapshotEntry Delete(string path, string name)
    {
        using var device = ExclusiveImageFile.Open(path, writable: true);
        return Delete(device, name);
    }

    internal static IReadOnlyList<SnapshotEntry> List(IBlockDevice device)
    {
        var s = SnapshotSession.Open(device, forWrite: false, verb: "list snapshots");
        return s.Snapshots;
    }

    // online: the open image's engine runs the edit and holds the dirty bit meanwhile (SnapshotSession.Open).
    internal static SnapshotEntry Create(IBlockDevice device, string name, DateTimeOffset now, bool online = false)
    {
        ArgumentNullException.ThrowIfNull(name);
        string verb = $"create snapshot '{name}'";
        // qemu-img keeps the name in a 256-byte buffer and silently cuts it; refuse instead.
        if (System.Text.Encoding.UTF8.GetByteCount(name) > MaxNameBytes)
            throw new SnapshotEditException($"Could not {verb}: the name is longer than {MaxNameBytes} bytes", SnapshotEditException.BadNameCode);
        var s = SnapshotSession.Open(device, forWrite: true, verb, online);
        s.RequireSharing(verb);
        var h = s.Header;
        if (s.Snapshots.Count >= Qcow2Header.MaxSnapshots)
            throw new SnapshotEditException($"Could not {verb}: the image already holds QEMU's limit of {Qcow2Header.MaxSnapshots} snapshots");

        var active = s.ReadL1(h.L1TableOffset, h.L1Size, "active L1 table");
        var increments = new Dictionary<long, long>();
        s.AddTree(active, +1, increments);
        s.CheckDeltas(increments, verb);

        // Plan everything in memory; nothing is written until the plan is complete.
        var rc = s.Refcounts;
        long snapshotL1Offset = s.AllocateBytes(active.Length * 8L);
        s.ApplyDeltas(increments);
        var entry = new SnapshotEntry
        {
            L1TableOffset = snapshotL1Offset,
            L1Size = active.Length,
            Id = NextId(s.Snapshots),
            Name = name,
            DateSeconds = (uint)now.ToUnixTimeSeconds(),
            // QEMU takes the time in microseconds (g_get_real_time), so nanoseconds end in 000.
            DateNanoseconds = (uint)(now.UtcTicks % TimeSpan.TicksPerSecond / 10 * 1000),
            VmClockNanoseconds = 0,
            VmStateSize = 0,
            DiskSize = h.Size,
            // qemu-img 7.2 records icount 0 (its replay stub), not -1: match it so -l lists alike.
            Icount = 0,
        };
        var entries = new List<SnapshotEntry>(s.Snapshots) { entry };
        var (tableOffset, table) = s.PlanSnapshotTable(entries);
        s.RecomputeCopied(active);
        s.KeepOldRefcountTable();

        // 1. The snapshot's L1 and every increment, durable before anything points at them.
        s.WriteL1(snapshotL1Offset, active, copied: false);
        rc.WriteBack();
        device.Flush();
        // 2. The active tables without COPIED where clusters are now shared, and the new table.
        s.WriteActiveTables(h.L1TableOffset, active);
        Write.MetadataEvents.Raise(Write.MetadataEvent.SnapshotEdit, device.Name);
        device.Write(table, tableOffset);
        device.Flush();
        // 3. One header write switches to the new table.
        var next = h.Clone();
        next.NbSnapshots = entries.Count;
        next.SnapshotsOffset = tableOffset;
        s.WriteHeader(next);
        device.Flush();
        // 4. Only now free the old table (a crash before this leaks it, nothing worse).
        s.FreeOldSnapshotTable();
        s.ReleaseOldRefcountTable();
        rc.WriteBack();
        device.Flush();
        return entry;
    }

    internal static SnapshotEntry Apply(IBlockDevice device, string idOrName, bool online = false)
    {
        ArgumentNullException.ThrowIfNull(idOrName);
        string verb = $"apply snapshot '{idOrName}'";
        var s = SnapshotSession.Open(device, forWrite: true, verb, online);
        var sn = s.Snapshots.FirstOrDefault(e => e.Id == idOrName) ?? s.Snapshots.FirstOrDefault(e => e.Name == idOrName)
            ?? throw new SnapshotEditException($"Could not {verb}: Failed to load snapshot: No such file or directory", SnapshotEditException.NotFoundCode);
        s.RequireSharing(verb);
        var h = s.Header;
        long newSize = sn.DiskSize ?? h.Size;

        var snapshotL1 = s.ReadL1(sn.L1TableOffset, sn.L1Size, $"L1 table of snapshot {sn.Id}");
        var active = s.ReadL1(h.L1TableOffset, h.L1Size, "active L1 table");
        var increments = new Dictionary<long, long>();
        s.AddTree(snapshotL1, +1, increments);
        s.CheckDeltas(increments, verb);
        var decrements = new Dictionary<long, long>();
        s.AddTree(active, -1, decrements);
        s.AddClusters(h.L1TableOffset, h.L1Size * 8L, -1, decrements);
        s.CheckDeltas(Combine(increments, decrements), verb);

        // The new active L1 goes to new clusters so the switch is one header write, not a torn
        // in-place rewrite; it keeps the larger of both sizes, as QEMU's grown L1 does.
        long required = Qcow2Header.RequiredL1Size(newSize, h.ClusterBits, h.HasExtendedL2);
        int l1Size = (int)Math.Max(Math.Max(h.L1Size, sn.L1Size), required);
        var newActive = new ulong[l1Size];
        for (int i = 0; i < snapshotL1.Length; i++) newActive[i] = snapshotL1[i] & ~L1Entry.CopiedFlag;
        var rc = s.Refcounts;
        long newL1Offset = s.AllocateBytes(l1Size * 8L);
        s.ApplyDeltas(increments);
        s.KeepOldRefcountTable();

        // 1. New L1 and the snapshot tree's increments, durable before the header points at them.
        s.WriteL1(newL1Offset, newActive, copied: false);
        rc.WriteBack();
        device.Flush();
        // 2. One header write: size, L1 size and L1 offset together; 3. then drop the old active tree and its L1.
        s.SwitchActiveL1(newSize, newL1Offset, l1Size, decrements);
        // 4. COPIED from the final refcounts (the snapshot's own flags are stale).
        s.RecomputeCopied(newActive);
        s.WriteActiveTables(newL1Offset, newActive);
        device.Flush();
        return sn;
    }

    // byIdFirst: look the name up as an ID first, then as a name (the online API); else by name only
    // (qemu-img snapshot -d). online: the open image's engine runs the edit and holds the dirty bit.
    internal static SnapshotEntry Delete(IBlockDevice device, string name, bool byIdFirst = false, bool online = false)
    {
        ArgumentNullException.ThrowIfNull(name);
        string verb = $"delete snapshot '{name}'";
        var s = SnapshotSession.Open(device, forWrite: true, verb, online);
        var sn = (byIdFirst ? s.Snapshots.FirstOrDefault(e => e.Id == name) : null) ?? s.Snapshots.FirstOrDefault(e => e.Name == name)
            ?? throw new SnapshotEditException($"Could not {verb}: snapshot not found", SnapshotEditException.NotFoundCode);
        var h = s.Header;

        var snapshotL1 = s.ReadL1(sn.L1TableOffset, sn.L1Size, $"L1 table of snapshot {sn.Id}");
        var decrements = new Dictionary<long, long>();
        s.AddTree(snapshotL1, -1, decrements);
        s.AddClusters(sn.L1TableOffset, sn.L1Size * 8L, -1, decrements);
        s.CheckDeltas(decrements, verb);

        var entries = s.Snapshots.Where(e => !ReferenceEquals(e, sn)).ToList();
        var rc = s.Refcounts;
        var (tableOffset, table) = entries.Count == 0 ? (0L, Array.Empty<byte>()) : s.PlanSnapshotTable(entries);
        s.KeepOldRefcountTable();

        // 1. The new table (its allocation durable first, so a crash leaks it at worst).
        rc.WriteBack();
        if (table.Length > 0)
        {
            Write.MetadataEvents.Raise(Write.MetadataEvent.SnapshotEdit, device.Name);
            device.Write(table, tableOffset);
        }
        device.Flush();
        // 2. One header write drops the snapshot.
        var next = h.Clone();
        next.NbSnapshots = entries.Count;
        next.SnapshotsOffset = tableOffset;
        s.WriteHeader(next);
        device.Flush();
        // 3. Free its tree, its L1 and the old table.
        s.ApplyDeltas(decrements);
        s.FreeOldSnapshotTable();
        s.ReleaseOldRefcountTable();
        rc.WriteBack();
        device.Flush();
        // 4. Clusters only the snapshot shared are now owned by the disk alone: COPIED again.
        var active = s.ReadL1(h.L1TableOffset, h.L1Size, "active L1 table");
        s.RecomputeCopied(active);
        s.WriteActiveTables(h.L1TableOffset, active);
        device.Flush();
        return sn;
    }

    /// <summary>QEMU's snapshot name buffer is 256 bytes with the NUL.</summary>
    internal const int MaxNameBytes = 255;

    // QEMU's find_new_snapshot_id: one more than the largest strtoul() of the existing IDs.
    private static string NextId(IEnumerable<SnapshotEntry> entries)
    {
        ulong max = 0;
        foreach (var e in entries)
        {
            ulong v = 0;
            foreach (char c in e.Id)
            {
                if (c is < '0' or > '9') break;
                v = unchecked(v * 10 + (ulong)(c - '0'));
            }
            max = Math.Max(max, v);
        }
        return (max + 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private static Dictionary<long, long> Combine(Dictionary<long, long> a, Dictionary<long, long> b)
    {
        var sum = new Dictionary<long, long>(a);
        foreach (var (c, d) in b) sum[c] = sum.GetValueOrDefault(c) + d;
        return sum;
    }
}
