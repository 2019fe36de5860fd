using System.Numerics;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Create;

/// <summary>
/// Lays out a new, clean qcow2 image: cluster 0 (header, extensions, backing name), the
/// refcount table, refcount blocks covering every used cluster, the L1 table and, with
/// metadata preallocation, every L2 table and data cluster. Layout follows qemu-img
/// (header, refcount table, refcount block, L1), so images look familiar in hex dumps.
/// </summary>
public static class ImageCreator
{
    /// <summary>Creates <paramref name="path"/> (which must not exist) and returns its header block.</summary>
    public static ImageHeaderBlock Create(string path, Qcow2CreateOptions options)
    {
        Validate(options);
        var block = BuildHeaderBlock(options);
        var dataFileDevicePath = ResolveDataFile(path, options.DataFile);
        if (dataFileDevicePath is not null && !File.Exists(dataFileDevicePath))
        {
            using var data = FileBlockDevice.Create(dataFileDevicePath);
            data.SetLength(options.Size);
        }
        using var device = FileBlockDevice.Create(path);
        try
        {
            Write(device, block, options);
            device.Flush();
        }
        catch
        {
            device.Dispose();
            File.Delete(path);
            throw;
        }
        return block;
    }

    /// <summary>Writes a new image onto an empty device; used by <see cref="Create"/> and by tests on memory devices.</summary>
    public static void Write(IBlockDevice device, ImageHeaderBlock block, Qcow2CreateOptions options)
    {
        var h = block.Header;
        int cs = h.ClusterSize;
        long l1Bytes = (long)h.L1Size * 8;
        long l1Clusters = (l1Bytes + cs - 1) / cs;
        bool prealloc = options.Preallocation == Preallocation.Metadata;
        bool external = options.DataFile is not null;
        long guestClusters = (h.Size + cs - 1) / cs;
        long l2Tables = prealloc ? (guestClusters + h.L2Entries - 1) / h.L2Entries : 0;
        long dataClusters = prealloc && !external ? guestClusters : 0;

        // Fixed point: refcount blocks must cover themselves and the table that points to them.
        long entriesPerBlock = RefcountBlock.EntriesPerBlock(h.ClusterBits, h.RefcountOrder);
        long tableClusters = 1, blocks = 1;
        while (true)
        {
            long total = 1 + tableClusters + blocks + l1Clusters + l2Tables + dataClusters;
            long needBlocks = (total + entriesPerBlock - 1) / entriesPerBlock;
            long needTable = Math.Max(1, (needBlocks * 8 + cs - 1) / cs);
            if (needBlocks == blocks && needTable == tableClusters) break;
            blocks = Math.Max(blocks, needBlocks);
            tableClusters = Math.Max(tableClusters, needTable);
        }
        if (tableClusters * cs > Qcow2Header.MaxRefcountTableBytes)
            throw new ArgumentException($"image too large for {h.RefcountBits}-bit refcounts with {cs}-byte clusters");

        long tableOffset = cs;
        long blocksOffset = tableOffset + tableClusters * cs;
        long l1Offset = blocksOffset + blocks * cs;
        long next = l1Offset + l1Clusters * cs;

        h.RefcountTableOffset = tableOffset;
        h.RefcountTableClusters = (int)tableClusters;
        h.L1TableOffset = h.L1Size == 0 ? 0 : l1Offset;

        // Cluster 0 through the one header codec and writer; the rest of the cluster stays a hole (zeros).
        Qcow2Actors.Engine.Write.HeaderWriter.Write(device, block);

        var l1 = new byte[l1Clusters * cs];
        if (prealloc)
        {
            var l2 = new byte[cs];
            bool extended = h.HasExtendedL2;
            for (long t = 0; t < l2Tables; t++)
            {
                long l2Offset = next;
                next += cs;
                L1Entry.Create(l2Offset, copied: true).Write(l1, (int)t);
                Array.Clear(l2);
                long first = t * h.L2Entries;
                int count = (int)Math.Min(h.L2Entries, guestClusters - first);
                for (int i = 0; i < count; i++)
                {
                    long host;
                    if (external) host = (first + i) * cs;
                    else { host = next; next += cs; }
                    // Extended L2: reserve the cluster but leave every subcluster unallocated,
                    // so a backing file still shows through until the guest writes.
                    var entry = extended ? L2Entry.Extended(host, copied: true, allocated: 0, zero: 0) : L2Entry.Standard(host, copied: true);
                    L2Table.WriteEntry(l2, i, extended, entry);
                }
                device.Write(l2, l2Offset);
            }
        }
        long usedClusters = next / cs;

        var table = new byte[tableClusters * cs];
        for (long b = 0; b < blocks; b++)
            RefcountTableEntry.Create(blocksOffset + b * cs).Write(table, b);
        device.Write(table, tableOffset);

        var blockBytes = new byte[cs];
        for (long b = 0; b < blocks; b++)
        {
            Array.Clear(blockBytes);
            long firstCluster = b * entriesPerBlock;
            long last = Math.Min(usedClusters, firstCluster + entriesPerBlock);
            for (long c = firstCluster; c < last; c++)
                RefcountBlock.Set(blockBytes, c - firstCluster, h.RefcountOrder, 1);
            device.Write(blockBytes, blocksOffset + b * cs);
        }

        if (l1.Length > 0) device.Write(l1, l1Offset);
        // Preallocated data clusters stay holes: extend the file so they exist.
        if (device.Length < next) device.SetLength(next);
    }

    /// <summary>Builds cluster 0 for the options (no table offsets yet).</summary>
    public static ImageHeaderBlock BuildHeaderBlock(Qcow2CreateOptions options)
    {
        int clusterBits = BitOperations.Log2((uint)options.ClusterSize);
        int refcountOrder = BitOperations.Log2((uint)options.RefcountBits);
        var header = Qcow2Header.CreateNew(options.Size, clusterBits, options.Version, refcountOrder,
            options.ExtendedL2, options.CompressionType, options.LazyRefcounts);
        if (options.DataFile is not null)
        {
            header.IncompatibleFeatures |= IncompatibleFeatures.ExternalDataFile;
            if (options.DataFileRaw) header.AutoclearFeatures |= AutoclearFeatures.RawExternalData;
        }
        var block = new ImageHeaderBlock(header)
        {
            BackingFileName = options.BackingFile,
            BackingFormat = options.BackingFile is null ? null : options.BackingFormat,
            DataFile = options.DataFile,
        };
        if (options.Version >= 3) block.FeatureNames = FittingFeatureNames(block);
        return block;
    }

    /// <summary>
    /// The richest feature name table that fits in cluster 0 and names our journal-pending bit,
    /// so QEMU refuses a pending image by that name: QEMU's names plus ours; else only the
    /// incompatible ones (a 512-byte cluster has no room for all nine entries); else ours
    /// alone; else QEMU's; else none.
    /// </summary>
    public static FeatureNameTable? FittingFeatureNames(ImageHeaderBlock block)
    {
        var full = FeatureNameTable.Qcow2ActorsDefault();
        var candidates = new[]
        {
            full,
            new FeatureNameTable(full.Entries.Where(e => e.Type == FeatureType.Incompatible)),
            new FeatureNameTable(full.Entries.Where(e => e.Type == FeatureType.Incompatible && e.Bit == 63)),
            FeatureNameTable.QemuDefault(),
        };
        foreach (var table in candidates)
        {
            block.FeatureNames = table;
            if (block.EncodedLength <= block.Header.ClusterSize) return table;
        }
        block.FeatureNames = null;
        return null;
    }

    private static void Validate(Qcow2CreateOptions o)
    {
        if (o.Size < 0) throw new ArgumentException("Image size must not be negative");
        if (o.ClusterSize < 512 || o.ClusterSize > 2 * 1024 * 1024 || !BitOperations.IsPow2(o.ClusterSize))
            throw new ArgumentException("Cluster size must be a power of two between 512 and 2048k");
        if (o.RefcountBits is not (1 or 2 or 4 or 8 or 16 or 32 or 64))
            throw new ArgumentException("Refcount width must be a power of two and may not exceed 64 bits");
        if (o.Version == 2)
        {
            if (o.RefcountBits != 16) throw new ArgumentException("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
            if (o.LazyRefcounts) throw new ArgumentException("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
            if (o.ExtendedL2) throw new ArgumentException("Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
            if (o.CompressionType != CompressionType.Zlib) throw new ArgumentException("Compression type other than zlib requires compatibility level 1.1 or above (use compat=1.1 or greater)");
            if (o.DataFile is not null) throw new ArgumentException("External data files are only supported with compatibility level 1.1 and above");
        }
        if (o.ExtendedL2 && o.ClusterSize < 16384)
            throw new ArgumentException("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        if (o.DataFileRaw && o.DataFile is null) throw new ArgumentException("data-file-raw requires a data file");
        if (o.DataFile is not null && o.BackingFile is not null && o.DataFileRaw)
            throw new ArgumentException("Backing file and data-file-raw cannot be used at the same time");
        if (o.BackingFile is not null && o.Preallocation != Preallocation.Off && !o.ExtendedL2)
            throw new ArgumentException("Backing file and preallocation can only be used at the same time if extended_l2 is on");
        if (o.BackingFormat is not null && o.BackingFile is null)
            throw new ArgumentException("Backing format cannot be used without backing file");
    }

    private static string? ResolveDataFile(string imagePath, string? dataFile)
    {
        if (dataFile is null) return null;
        if (Path.IsPathRooted(dataFile)) return dataFile;
        var dir = Path.GetDirectoryName(Path.GetFullPath(imagePath)) ?? ".";
        return Path.Combine(dir, dataFile);
    }
}
