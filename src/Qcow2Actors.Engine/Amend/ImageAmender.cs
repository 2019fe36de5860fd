using System.Globalization;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Amend;

/// <summary>
/// Changes the format options of a closed qcow2 image, as qemu-img amend does: compat (0.10 and
/// 1.1 both ways), refcount_bits, lazy_refcounts, the external data file's name and clearing
/// data_file_raw. Every refusal is decided before the first write, in qemu-img's order and words;
/// then the steps run in QEMU's order (upgrade, lazy refcounts, refcount width, data file,
/// downgrade), each ending in one header write after what it points at is durable.
/// </summary>
public static class ImageAmender
{
    private const string Verb = "amend the image";

    /// <summary>
    /// Amends the image at <paramref name="path"/>, opened under the image lock's "write" claim (a
    /// served image is refused). <paramref name="progress"/> hears percentages from 0 to 100.
    /// </summary>
    /// <param name="path">The qcow2 image.</param>
    /// <param name="options">What to change.</param>
    /// <param name="progress">Called with the percentage done, or null.</param>
    /// <exception cref="ImageAmendException">Refused; nothing was written.</exception>
    /// <exception cref="SnapshotEditException">The image is dirty, corrupt or has a pending journal.</exception>
    /// <exception cref="Qcow2ImageCorruptException">A table the change must read is damaged.</exception>
    public static void Amend(string path, AmendOptions options, Action<double>? progress = null)
    {
        using var device = ExclusiveImageFile.Open(path, writable: true);
        Amend(device, options, progress);
    }

    internal static void Amend(IBlockDevice device, AmendOptions options, Action<double>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var s = SnapshotSession.Open(device, forWrite: true, Verb);
        var h = s.Header;
        int oldVersion = h.Version, newVersion = options.Version ?? oldVersion;
        int oldOrder = h.RefcountOrder;
        // Option by option, as qemu-img parses them (data_file, data_file_raw, lazy_refcounts, refcount_bits).
        bool raw = h.HasExternalDataFile && (h.AutoclearFeatures & AutoclearFeatures.RawExternalData) != 0;
        if (options.DataFile is not null && !h.HasExternalDataFile)
            throw new ImageAmendException("data-file can only be set for images that use an external data file");
        if (options.DataFileRaw == true && !raw)
            throw new ImageAmendException("data-file-raw cannot be set on existing images");
        int newOrder = oldOrder;
        if (options.RefcountBits is int bits)
        {
            if (bits is < 1 or > 64 || (bits & (bits - 1)) != 0)
                throw new ImageAmendException("Refcount width must be a power of two and may not exceed 64 bits");
            if (newVersion < 3 && bits != 16)
                throw new ImageAmendException("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
            newOrder = System.Numerics.BitOperations.Log2((uint)bits);
        }
        bool lazy = options.LazyRefcounts ?? h.HasLazyRefcounts;
        if (lazy && !h.HasLazyRefcounts && newVersion < 3)
            throw new ImageAmendException("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        RefcountRebuild.OldRefcounts? old = null;
        if (newOrder != oldOrder)
        {
            old = RefcountRebuild.Read(device, h);
            if (newOrder < oldOrder && RefcountRebuild.FirstOverflow(device, old, newOrder) is var (cluster, count))
                throw new ImageAmendException(string.Create(CultureInfo.InvariantCulture,
                    $"Cannot decrease refcount entry width to {1 << newOrder} bits: Cluster at offset 0x{cluster << h.ClusterBits:x} has a refcount of {count}"));
        }
        if (newVersion < oldVersion) CheckDowngrade(device, s, newOrder);

        progress?.Invoke(0);
        if (newVersion > oldVersion) Upgrade(device, s);
        if (lazy != h.HasLazyRefcounts) SetLazyRefcounts(device, lazy);
        if (newOrder != oldOrder)
        {
            // Read again: an upgrade may have moved the snapshot table since the check above.
            var now = SnapshotSession.Open(device, forWrite: true, Verb).Header;
            RefcountRebuild.Run(device, now, newVersion > oldVersion ? RefcountRebuild.Read(device, now) : old!, newOrder, progress is null ? null : p => progress(p * 0.9));
        }
        if (options.DataFile is not null || (options.DataFileRaw == false && raw)) SetDataFile(device, options.DataFile, options.DataFileRaw == false);
        if (newVersion < oldVersion) Downgrade(device);
        progress?.Invoke(100);
    }

    // qemu-img's reasons first (refcount width, data file, incompatible features); then what q2a
    // refuses where qemu-img 7.2 would leave leaks or wrong COPIED flags behind.
    private static void CheckDowngrade(IBlockDevice device, SnapshotSession s, int finalOrder)
    {
        var h = s.Header;
        if (finalOrder != 4) throw new ImageAmendException("compat=0.10 requires refcount_bits=16");
        if (h.HasExternalDataFile) throw new ImageAmendException("Cannot downgrade an image with a data file");
        var incompatible = h.IncompatibleFeatures & ~(IncompatibleFeatures.Dirty | IncompatibleFeatures.CompressionType);
        if (incompatible != IncompatibleFeatures.None)
            throw new ImageAmendException(string.Create(CultureInfo.InvariantCulture, $"Cannot downgrade an image with incompatible features 0x{(ulong)incompatible:x} set"));
        if (h.CompressionType != CompressionType.Zlib)
            throw new ImageAmendException("Cannot downgrade an image with zstd compression: version 2 reads every compressed cluster as zlib");
        if (s.Block.Bitmaps is not null || (h.AutoclearFeatures & AutoclearFeatures.Bitmaps) != 0)
            throw new ImageAmendException("Cannot downgrade an image with persistent bitmaps: version 2 cannot keep them (remove them first)");
        if (s.Snapshots.Count > 0)
        {
            var trees = s.Snapshots.Select(e => s.ReadL1(e.L1TableOffset, e.L1Size, $"L1 table of snapshot {e.Id}"))
                .Prepend(s.ReadL1(h.L1TableOffset, h.L1Size, "active L1 table"));
            if (trees.Any(l1 => ZeroClusterExpansion.HasZeroClusters(device, h, l1)))
                throw new ImageAmendException("Cannot downgrade an image with zero clusters and internal snapshots: expanding clusters the snapshots share is not supported");
        }
    }

    private static void Upgrade(IBlockDevice device, SnapshotSession s)
    {
        var h = s.Header;
        var next = h.Clone();
        next.Version = 3;
        next.HeaderLength = Qcow2Header.V3DefaultHeaderLength;
        next.CompressionType = CompressionType.Zlib;
        // Version 3 snapshot entries carry at least 16 bytes of extra data: rewrite a table that lacks them.
        bool rewrite = s.Snapshots.Count > 0 && s.Snapshots.Any(e => e.ExtraDataSize < SnapshotEntry.MinV3ExtraDataSize);
        if (rewrite)
        {
            var (offset, table) = s.PlanSnapshotTable(s.Snapshots);
            s.KeepOldRefcountTable();
            s.Refcounts.WriteBack();
            device.Write(table, offset);
            device.Flush();
            next.SnapshotsOffset = offset;
            next.RefcountTableOffset = s.Refcounts.TableOffset;
            next.RefcountTableClusters = s.Refcounts.TableClusters;
        }
        WriteBlock(device, s.Block, next, block => block.FeatureNames = ImageCreator.FittingFeatureNames(block));
        device.Flush();
        if (rewrite)
        {
            s.FreeOldSnapshotTable();
            s.ReleaseOldRefcountTable();
            s.Refcounts.WriteBack();
            device.Flush();
        }
    }

    private static void SetLazyRefcounts(IBlockDevice device, bool on)
    {
        var h = SnapshotSession.Open(device, forWrite: true, Verb).Header;
        var next = h.Clone();
        next.CompatibleFeatures = on ? h.CompatibleFeatures | CompatibleFeatures.LazyRefcounts : h.CompatibleFeatures & ~CompatibleFeatures.LazyRefcounts;
        HeaderWriter.WriteChangedFields(device, h, next);
        device.Flush();
    }

    private static void SetDataFile(IBlockDevice device, string? name, bool clearRaw)
    {
        var s = SnapshotSession.Open(device, forWrite: true, Verb);
        var next = s.Header.Clone();
        if (clearRaw) next.AutoclearFeatures &= ~AutoclearFeatures.RawExternalData;
        WriteBlock(device, s.Block, next, block =>
        {
            if (name is not null) block.DataFile = name;
        });
        device.Flush();
    }

    private static void Downgrade(IBlockDevice device)
    {
        var s = SnapshotSession.Open(device, forWrite: true, Verb);
        ZeroClusterExpansion.Run(device, s);
        var next = s.Header.Clone();
        next.Version = 2;
        next.HeaderLength = Qcow2Header.V2HeaderLength;
        next.IncompatibleFeatures = IncompatibleFeatures.None;
        next.CompatibleFeatures = CompatibleFeatures.None;
        next.AutoclearFeatures = AutoclearFeatures.None;
        next.CompressionType = CompressionType.Zlib;
        if (s.Refcounts.TableOffset != s.Header.RefcountTableOffset)
        {
            next.RefcountTableOffset = s.Refcounts.TableOffset;
            next.RefcountTableClusters = s.Refcounts.TableClusters;
        }
        WriteBlock(device, s.Block, next, block => block.FeatureNames = null);
        device.Flush();
    }

    /// <summary>
    /// Writes cluster 0's header part (header, extensions, backing name) with <paramref name="next"/>
    /// in place of the header, through the header writer's codec; the extensions move when the header
    /// length changes, so the whole part is one write (it fits one sector for all but long names).
    /// </summary>
    private static void WriteBlock(IBlockDevice device, ImageHeaderBlock block, Qcow2Header next, Action<ImageHeaderBlock> edit)
    {
        var before = block.Header;
        block.Header = next;
        edit(block);
        try
        {
            HeaderWriter.Write(device, block);
        }
        finally
        {
            block.Header = before;
        }
    }
}
