using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Info;

/// <summary>One internal snapshot as the snapshot table stores it.</summary>
/// <param name="Id">Unique ID string (decimal in practice).</param>
/// <param name="Name">Snapshot name (tag).</param>
/// <param name="L1TableOffset">Host offset of the snapshot's L1 table.</param>
/// <param name="L1Size">Entries in the snapshot's L1 table.</param>
/// <param name="VmStateSize">Saved VM state size in bytes (the 64-bit extra field when present).</param>
/// <param name="DateSeconds">Creation time, seconds since the epoch.</param>
/// <param name="DateNanoseconds">Creation time, nanosecond part.</param>
/// <param name="VmClockNanoseconds">Guest run time at creation, in nanoseconds.</param>
/// <param name="Icount">Instruction count, or -1 when the entry does not record one.</param>
/// <param name="ExtraDataSize">extra_data_size as stored; v3 requires at least 16.</param>
public sealed record SnapshotInfo(
    string Id, string Name, ulong L1TableOffset, uint L1Size, ulong VmStateSize,
    uint DateSeconds, uint DateNanoseconds, ulong VmClockNanoseconds, long Icount, uint ExtraDataSize)
{
    internal static SnapshotInfo From(SnapshotEntry e) => new(
        e.Id, e.Name, (ulong)e.L1TableOffset, (uint)e.L1Size, e.VmStateSize,
        e.DateSeconds, e.DateNanoseconds, e.VmClockNanoseconds, e.Icount ?? -1, e.ExtraDataSize);
}

/// <summary>One persistent dirty bitmap from the bitmap directory.</summary>
/// <param name="Name">Bitmap name.</param>
/// <param name="Granularity">Bytes of guest data per bit.</param>
/// <param name="Flags">Directory flags: bit 0 in-use, bit 1 auto.</param>
/// <param name="TableOffset">Host offset of the bitmap table.</param>
/// <param name="TableSize">Entries in the bitmap table.</param>
public sealed record BitmapInfo(string Name, long Granularity, uint Flags, ulong TableOffset, uint TableSize)
{
    internal static BitmapInfo From(BitmapDirectoryEntry e) =>
        new(e.Name, 1L << e.GranularityBits, (uint)e.Flags, (ulong)e.TableOffset, (uint)e.TableSize);
}

/// <summary>
/// What `q2a info` and `q2a check` learn from cluster 0 and the tables it points to directly.
/// All decoding is Format's (<see cref="ImageHeaderBlock"/>, <see cref="SnapshotTable"/>,
/// <see cref="BitmapDirectory"/>) under the info or check <see cref="ValidationProfile"/>; this
/// class only reads the bytes, the way QEMU's file driver does (past the end of the file: zeros),
/// and words refusals as qemu-img does (<see cref="QemuImgWording"/>).
/// </summary>
internal sealed class ImageMetadata
{
    private ImageMetadata(ImageHeaderBlock block) => Block = block;

    /// <summary>Cluster 0 as Format decoded it.</summary>
    public ImageHeaderBlock Block { get; }
    /// <summary>The decoded header.</summary>
    public Qcow2Header Header => Block.Header;

    public int Version => Header.Version;
    public int ClusterBits => Header.ClusterBits;
    public long ClusterSize => Header.ClusterSize;
    public ulong VirtualSize => (ulong)Header.Size;
    public uint L1Size => (uint)Header.L1Size;
    public ulong L1TableOffset => (ulong)Header.L1TableOffset;
    public ulong RefcountTableOffset => (ulong)Header.RefcountTableOffset;
    public uint SnapshotCount => (uint)Header.NbSnapshots;
    public ulong SnapshotsOffset => (ulong)Header.SnapshotsOffset;
    public int RefcountOrder => Header.RefcountOrder;
    public int RefcountBits => Header.RefcountBits;
    public bool HasDataFile => Header.HasExternalDataFile;
    public bool ExtendedL2 => Header.HasExtendedL2;
    public int L2EntryBytes => Header.L2EntrySize;
    public long L2Entries => Header.L2Entries;
    public long RefcountTableEntries => Header.RefcountTableEntries;
    public ulong FdeOffset => (ulong)(Block.Fde?.Offset ?? 0);
    public ulong FdeLength => (ulong)(Block.Fde?.Length ?? 0);
    /// <summary>The bitmaps extension is in force (autoclear bit 0 and a valid extension).</summary>
    public bool BitmapsValid => Block.Bitmaps is not null;
    public ulong BitmapDirectoryOffset => (ulong)(Block.Bitmaps?.DirectoryOffset ?? 0);
    public ulong BitmapDirectorySize => (ulong)(Block.Bitmaps?.DirectorySize ?? 0);

    /// <summary>The snapshot table (read by <see cref="Load"/> under the info profile only; the checker reads it itself).</summary>
    public IReadOnlyList<SnapshotEntry> Snapshots { get; private set; } = [];
    /// <summary>Bytes the snapshot table spans (0 when there is none); QEMU refcounts exactly this range.</summary>
    public long SnapshotsSize { get; private set; }

    /// <summary>
    /// Reads cluster 0 (and under <see cref="ValidationProfile.Info"/> the snapshot table) and has
    /// Format decode and validate it.
    /// </summary>
    /// <exception cref="Qcow2FormatException">A rule is broken; the problem is worded as qemu-img words it.</exception>
    public static ImageMetadata Load(IBlockDevice device, ValidationProfile profile)
    {
        try
        {
            var first = new byte[Math.Min(4096, Math.Max(0, device.Length))];
            int got = ReadAvailable(device, first, 0);
            int want = Qcow2Header.Cluster0Length(first.AsSpan(0, got));
            byte[] cluster0 = first;
            // Only a header that reaches past the first 4 KiB needs the rest of a (up to 2 MiB) cluster.
            if (want > got && ImageHeaderBlock.UsedLength(first.AsSpan(0, got)) < 0)
            {
                cluster0 = new byte[want];
                got = ReadAvailable(device, cluster0, 0);
            }
            var block = ImageHeaderBlock.Read(cluster0.AsSpan(0, got), IncompatibleFeatures.KnownToQemu, profile);
            var meta = new ImageMetadata(block);
            if (profile != ValidationProfile.Check)
                (meta.Snapshots, meta.SnapshotsSize) = ReadSnapshots(device, meta, profile);
            return meta;
        }
        catch (Qcow2FormatException e)
        {
            throw QemuImgWording.Reword(e);
        }
    }

    /// <summary>
    /// Reads the snapshot table through <see cref="SnapshotTable.Read(ReadOnlySpan{byte}, int, int, long, ValidationProfile, out long)"/>,
    /// reading further only as far as the entries really reach (bounded by QEMU's 64 MiB limit).
    /// </summary>
    /// <exception cref="Qcow2FormatException">An entry breaks a rule (Format's wording).</exception>
    internal static (IReadOnlyList<SnapshotEntry> Snapshots, long Span) ReadSnapshots(IBlockDevice device, ImageMetadata m, ValidationProfile profile)
    {
        if (m.SnapshotCount == 0) return ([], 0);
        long size = Math.Min(64 * 1024, SnapshotTable.MaxReadSize);
        while (true)
        {
            var buffer = new byte[size];
            ReadZeroFilled(device, buffer, (long)m.SnapshotsOffset);
            try
            {
                var list = SnapshotTable.Read(buffer, (int)m.SnapshotCount, m.Version, (long)m.SnapshotsOffset, profile, out long stored);
                return (list, stored);
            }
            catch (Qcow2FormatException e) when (e.Rule == Qcow2Rule.SnapshotEntryTruncated && size < SnapshotTable.MaxReadSize)
            {
                size = Math.Min(SnapshotTable.MaxReadSize, size * 4);
            }
        }
    }

    /// <summary>Reads the bitmap directory as QEMU loads it; empty when the bitmaps extension is not in force.</summary>
    /// <exception cref="Qcow2FormatException">An entry breaks QEMU's directory rules (Format's wording).</exception>
    internal static IReadOnlyList<BitmapDirectoryEntry> ReadBitmaps(IBlockDevice device, ImageMetadata m, ValidationProfile profile)
    {
        if (m.Block.Bitmaps is not { } ext) return [];
        var dir = new byte[ext.DirectorySize];
        ReadZeroFilled(device, dir, ext.DirectoryOffset);
        return BitmapDirectory.Read(dir, ext.NbBitmaps, ext.DirectoryOffset, profile, m.ClusterBits);
    }

    /// <summary>Reads like QEMU's file driver: bytes past the end of the file read as zeros.</summary>
    internal static void ReadZeroFilled(IBlockDevice device, Span<byte> buffer, long offset)
    {
        var n = offset >= 0 && offset < device.Length ? device.Read(buffer, offset) : 0;
        if (n < buffer.Length) buffer[n..].Clear();
    }

    private static int ReadAvailable(IBlockDevice device, Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = device.Read(buffer[total..], offset + total);
            if (n <= 0) break;
            total += n;
        }
        return total;
    }
}
