using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Bitmaps;

/// <summary>
/// Reads persistent bitmaps from an image file: the directory the bitmaps extension points at and
/// each bitmap's table and data clusters. Format decodes every byte; this class only reads them
/// and judges them the way QEMU does before trusting a bitmap.
/// </summary>
internal static class BitmapReader
{
    /// <summary>The directory entries (none when the bitmaps extension is not in force).</summary>
    /// <exception cref="Qcow2ImageCorruptException">The directory lies past the end of the file.</exception>
    /// <exception cref="Qcow2FormatException">The directory breaks a rule of the format.</exception>
    public static async ValueTask<List<BitmapDirectoryEntry>> ReadDirectoryAsync(IBlockDevice device, ImageHeaderBlock block, CancellationToken cancellationToken)
    {
        if (block.Bitmaps is not { } ext) return [];
        var bytes = new byte[ext.DirectorySize];
        if (await device.ReadAsync(bytes, ext.DirectoryOffset, cancellationToken).ConfigureAwait(false) < bytes.Length)
            throw new Qcow2ImageCorruptException($"'{device.Name}': bitmap directory at 0x{ext.DirectoryOffset:X} lies past the end of the image");
        return BitmapDirectory.Read(bytes, ext.NbBitmaps, ext.DirectoryOffset);
    }

    /// <summary>Entries QEMU would load the bitmap with: usable extra data and a valid entry; else why not.</summary>
    public static string? Problem(BitmapDirectoryEntry e, long virtualSize, int clusterBits)
    {
        if (!e.IsUsable) return $"bitmap '{e.Name}' has extra data this version does not know";
        if (e.Validate(clusterBits) is { } problem) return problem;
        long bits = (virtualSize + (1L << e.GranularityBits) - 1) >> e.GranularityBits;
        long perCluster = DirtyBitmap.BitsPerCluster(1 << clusterBits);
        long tableSize = (bits + perCluster - 1) / perCluster;
        if (e.TableSize != tableSize)
            return $"bitmap '{e.Name}' has {e.TableSize} table entries but a {virtualSize}-byte disk needs {tableSize}";
        return null;
    }

    /// <summary>Reads the bits of the bitmap <paramref name="e"/> describes.</summary>
    /// <exception cref="Qcow2ImageCorruptException">The table or a data cluster is damaged or outside the file.</exception>
    public static async ValueTask<DirtyBitmap> ReadBitsAsync(IBlockDevice device, BitmapDirectoryEntry e, long virtualSize, int clusterSize, CancellationToken cancellationToken)
    {
        var load = new BitsLoad(device, e, virtualSize, clusterSize);
        load.TableRead(await device.ReadAsync(load.Table, e.TableOffset, cancellationToken).ConfigureAwait(false));
        for (int i = 0; i < e.TableSize; i++)
        {
            if (load.DataOffset(i) is not { } at) continue;
            load.ClusterRead(i, at, await device.ReadAsync(load.Cluster, at, cancellationToken).ConfigureAwait(false));
        }
        return load.Bits;
    }

    /// <summary>Reads the bits of the bitmap <paramref name="e"/> describes, blocking (recovery, which owns the file).</summary>
    /// <exception cref="Qcow2ImageCorruptException">The table or a data cluster is damaged or outside the file.</exception>
    public static DirtyBitmap ReadBits(IBlockDevice device, BitmapDirectoryEntry e, long virtualSize, int clusterSize)
    {
        var load = new BitsLoad(device, e, virtualSize, clusterSize);
        load.TableRead(device.Read(load.Table, e.TableOffset));
        for (int i = 0; i < e.TableSize; i++)
        {
            if (load.DataOffset(i) is not { } at) continue;
            load.ClusterRead(i, at, device.Read(load.Cluster, at));
        }
        return load.Bits;
    }

    /// <summary>
    /// One bitmap being loaded: the judging and decoding the blocking and the async reader share, so
    /// they differ only in how they read the table and the data clusters.
    /// </summary>
    private sealed class BitsLoad
    {
        private readonly string _device;
        private readonly BitmapDirectoryEntry _entry;
        private readonly int _clusterBits;

        public BitsLoad(IBlockDevice device, BitmapDirectoryEntry e, long virtualSize, int clusterSize)
        {
            _device = device.Name;
            _entry = e;
            _clusterBits = System.Numerics.BitOperations.Log2((uint)clusterSize);
            if (Problem(e, virtualSize, _clusterBits) is { } problem)
                throw new Qcow2ImageCorruptException($"'{_device}': {problem}");
            Bits = new DirtyBitmap(e.GranularityBits, virtualSize);
            Table = new byte[(long)e.TableSize * BitmapTableEntry.Size];
            Cluster = new byte[clusterSize];
        }

        public DirtyBitmap Bits { get; }
        public byte[] Table { get; }
        public byte[] Cluster { get; }

        /// <summary>The table read returned <paramref name="read"/> bytes.</summary>
        public void TableRead(int read)
        {
            if (read < Table.Length)
                throw new Qcow2ImageCorruptException($"'{_device}': bitmap '{_entry.Name}' table at 0x{_entry.TableOffset:X} lies past the end of the image");
        }

        /// <summary>Where table entry <paramref name="i"/>'s data cluster is, or null when the entry needs no read (all zeros, or all ones, loaded here).</summary>
        public long? DataOffset(int i)
        {
            var entry = BitmapTableEntry.Read(Table, i);
            if (entry.Validate(_clusterBits) is { } bad)
                throw new Qcow2ImageCorruptException($"'{_device}': bitmap '{_entry.Name}' entry {i}: {bad}");
            if (entry.IsAllZeros) return null;
            if (entry.IsAllOnes)
            {
                Bits.LoadAllOnes(i, Cluster.Length);
                return null;
            }
            return entry.DataOffset;
        }

        /// <summary>The read of entry <paramref name="i"/>'s data cluster at <paramref name="at"/> into <see cref="Cluster"/> returned <paramref name="read"/> bytes.</summary>
        public void ClusterRead(int i, long at, int read)
        {
            if (read < Cluster.Length)
                throw new Qcow2ImageCorruptException($"'{_device}': bitmap '{_entry.Name}' data cluster 0x{at:X} lies past the end of the image");
            Bits.LoadCluster(i, Cluster);
        }
    }
}
