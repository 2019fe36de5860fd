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
        int clusterBits = System.Numerics.BitOperations.Log2((uint)clusterSize);
        if (Problem(e, virtualSize, clusterBits) is { } problem)
            throw new Qcow2ImageCorruptException($"'{device.Name}': {problem}");
        var bits = new DirtyBitmap(e.GranularityBits, virtualSize);
        var table = new byte[(long)e.TableSize * BitmapTableEntry.Size];
        if (await device.ReadAsync(table, e.TableOffset, cancellationToken).ConfigureAwait(false) < table.Length)
            throw new Qcow2ImageCorruptException($"'{device.Name}': bitmap '{e.Name}' table at 0x{e.TableOffset:X} lies past the end of the image");
        var cluster = new byte[clusterSize];
        for (int i = 0; i < e.TableSize; i++)
        {
            var entry = BitmapTableEntry.Read(table, i);
            if (entry.Validate(clusterBits) is { } bad)
                throw new Qcow2ImageCorruptException($"'{device.Name}': bitmap '{e.Name}' entry {i}: {bad}");
            if (entry.IsAllZeros) continue;
            if (entry.IsAllOnes)
            {
                bits.LoadAllOnes(i, clusterSize);
                continue;
            }
            if (await device.ReadAsync(cluster, entry.DataOffset, cancellationToken).ConfigureAwait(false) < cluster.Length)
                throw new Qcow2ImageCorruptException($"'{device.Name}': bitmap '{e.Name}' data cluster 0x{entry.DataOffset:X} lies past the end of the image");
            bits.LoadCluster(i, cluster);
        }
        return bits;
    }

    /// <summary>Reads the bits of the bitmap <paramref name="e"/> describes, blocking (recovery, which owns the file).</summary>
    /// <exception cref="Qcow2ImageCorruptException">The table or a data cluster is damaged or outside the file.</exception>
    public static DirtyBitmap ReadBits(IBlockDevice device, BitmapDirectoryEntry e, long virtualSize, int clusterSize)
    {
        int clusterBits = System.Numerics.BitOperations.Log2((uint)clusterSize);
        if (Problem(e, virtualSize, clusterBits) is { } problem)
            throw new Qcow2ImageCorruptException($"'{device.Name}': {problem}");
        var bits = new DirtyBitmap(e.GranularityBits, virtualSize);
        var table = new byte[(long)e.TableSize * BitmapTableEntry.Size];
        if (device.Read(table, e.TableOffset) < table.Length)
            throw new Qcow2ImageCorruptException($"'{device.Name}': bitmap '{e.Name}' table at 0x{e.TableOffset:X} lies past the end of the image");
        var cluster = new byte[clusterSize];
        for (int i = 0; i < e.TableSize; i++)
        {
            var entry = BitmapTableEntry.Read(table, i);
            if (entry.Validate(clusterBits) is { } bad)
                throw new Qcow2ImageCorruptException($"'{device.Name}': bitmap '{e.Name}' entry {i}: {bad}");
            if (entry.IsAllZeros) continue;
            if (entry.IsAllOnes)
            {
                bits.LoadAllOnes(i, clusterSize);
                continue;
            }
            if (device.Read(cluster, entry.DataOffset) < cluster.Length)
                throw new Qcow2ImageCorruptException($"'{device.Name}': bitmap '{e.Name}' data cluster 0x{entry.DataOffset:X} lies past the end of the image");
            bits.LoadCluster(i, cluster);
        }
        return bits;
    }
}
