using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Info;

/// <summary>
/// Maps Format's rule ids to the words qemu-img uses for the same refusal, so `q2a info` and
/// `q2a check` print what qemu-img prints while Format stays the only judge of the bytes. The
/// field and offset are kept (they point at the bytes), except where qemu-img's complaint names
/// a different field than the one Format caught it in.
/// </summary>
internal static class QemuImgWording
{
    /// <summary>The same refusal (same rule, value and index) worded as qemu-img words it.</summary>
    public static Qcow2FormatException Reword(Qcow2FormatException e)
    {
        var (field, offset, problem) = Describe(e);
        return new Qcow2FormatException(e.Rule, field, offset, problem, e.Value, e.Index, e) { FeatureNames = e.FeatureNames };
    }

    /// <summary>qemu-img's wording for a snapshot table problem the checker reports (the problem alone).</summary>
    public static string SnapshotProblem(Qcow2FormatException e) => Describe(e).Problem;

    private static (string Field, long Offset, string Problem) Describe(Qcow2FormatException e)
    {
        var v = e.Value;
        return e.Rule switch
        {
            Qcow2Rule.HeaderTruncated when e.Field == "header" => ("magic", Qcow2Header.MagicOffset, "file too short for a qcow2 header"),
            Qcow2Rule.BadMagic => ("magic", Qcow2Header.MagicOffset, "Image is not in qcow2 format"),
            Qcow2Rule.UnsupportedVersion => ("version", Qcow2Header.VersionOffset, $"Unsupported qcow2 version {(int)v}"),
            Qcow2Rule.ClusterBitsOutOfRange => ("cluster_bits", Qcow2Header.ClusterBitsOffset, $"Unsupported cluster size: 2^{(int)v}"),
            Qcow2Rule.HeaderLengthTooShort => ("header_length", Qcow2Header.HeaderLengthOffset, "qcow2 header too short"),
            Qcow2Rule.HeaderLengthExceedsCluster => ("header_length", Qcow2Header.HeaderLengthOffset, "qcow2 header exceeds cluster size"),
            Qcow2Rule.HeaderLengthUnaligned => ("header_length", Qcow2Header.HeaderLengthOffset, $"header length {v} is not a multiple of 8"),
            Qcow2Rule.BackingFileOffsetInvalid => ("backing_file_offset", Qcow2Header.BackingFileOffsetOffset, "Invalid backing file offset"),
            Qcow2Rule.BackingFileNameTooLong => ("backing_file_size", Qcow2Header.BackingFileSizeOffset, "Backing file name too long"),
            Qcow2Rule.CryptMethodUnknown => ("crypt_method", Qcow2Header.CryptMethodOffset, $"Unsupported encryption method {v}"),
            Qcow2Rule.CompressionTypeUnknown => ("compression_type", Qcow2Header.CompressionTypeOffset, $"qcow2: unknown compression type: {v}"),
            Qcow2Rule.CompressionBitWithoutType => ("incompatible_features", Qcow2Header.IncompatibleFeaturesOffset, "qcow2: Compression type incompatible feature bit must not be set"),
            Qcow2Rule.CompressionTypeWithoutBit => ("incompatible_features", Qcow2Header.IncompatibleFeaturesOffset, "qcow2: Compression type incompatible feature bit must be set"),
            Qcow2Rule.ExtensionTooLarge => (e.Field, e.Offset, "Header extension too large"),
            Qcow2Rule.ExtensionDuplicate => (e.Field, e.Offset, $"duplicate header extension 0x{v:x8}"),
            Qcow2Rule.BackingFormatTooLong => (e.Field, e.Offset, $"ERROR: ext_backing_format: len={v} too large (>={ImageHeaderBlock.MaxBackingFormatLength + 1})"),
            Qcow2Rule.BitmapsExtensionLength => (e.Field, e.Offset, $"bitmaps_ext: Invalid extension length {v}"),
            Qcow2Rule.FdeWithoutLuks => ("crypt_method", Qcow2Header.CryptMethodOffset, "CRYPTO header extension only expected with LUKS encryption method"),
            Qcow2Rule.FdeExtensionLength => (e.Field, e.Offset, $"Invalid encryption header extension length {v}"),
            Qcow2Rule.UnsupportedIncompatibleFeature => ("incompatible_features", Qcow2Header.IncompatibleFeaturesOffset, $"Unsupported qcow2 feature(s): {FeatureList(e)}"),
            Qcow2Rule.RefcountOrderTooLarge => ("refcount_order", Qcow2Header.RefcountOrderOffset, "Reference count entry width too large; may not exceed 64 bits"),
            Qcow2Rule.ExtendedL2ClusterTooSmall => ("cluster_bits", Qcow2Header.ClusterBitsOffset, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"),
            Qcow2Rule.RawDataWithoutDataFile => ("autoclear_features", Qcow2Header.AutoclearFeaturesOffset, "data-file-raw requires a data file"),
            Qcow2Rule.LuksWithoutFde => ("crypt_method", Qcow2Header.CryptMethodOffset, "LUKS encryption requires the full disk encryption header extension"),
            Qcow2Rule.NoRefcountTable => ("refcount_table_clusters", Qcow2Header.RefcountTableClustersOffset, "Image does not contain a reference count table"),
            Qcow2Rule.RefcountTableTooLarge => ("refcount_table_clusters", Qcow2Header.RefcountTableClustersOffset, "Reference count table too large"),
            Qcow2Rule.RefcountTableOffsetInvalid => ("refcount_table_offset", Qcow2Header.RefcountTableOffsetOffset, "Reference count table offset invalid"),
            Qcow2Rule.SnapshotTableTooLarge => ("nb_snapshots", Qcow2Header.NbSnapshotsOffset, "Snapshot table too large"),
            Qcow2Rule.SnapshotTableOffsetInvalid => ("snapshots_offset", Qcow2Header.SnapshotsOffsetOffset, "Snapshot table offset invalid"),
            Qcow2Rule.L1TableTooLarge => ("l1_size", Qcow2Header.L1SizeOffset, "Active L1 table too large"),
            Qcow2Rule.L1TableOffsetInvalid => ("l1_table_offset", Qcow2Header.L1TableOffsetOffset, "Active L1 table offset invalid"),
            Qcow2Rule.ImageTooBig => ("size", Qcow2Header.SizeOffset, "Image is too big"),
            Qcow2Rule.L1TableTooSmall => ("l1_size", Qcow2Header.L1SizeOffset, "L1 table is too small"),
            Qcow2Rule.BitmapCountZero or Qcow2Rule.BitmapsBitWithoutExtension => ("nb_bitmaps", BitmapsExtension.NbBitmapsOffset, "bitmaps_ext: found bitmaps extension with zero bitmaps"),
            Qcow2Rule.BitmapCountTooLarge => ("nb_bitmaps", BitmapsExtension.NbBitmapsOffset, $"bitmaps_ext: File {v} bitmaps, exceeding the QEMU supported maximum of {BitmapsExtension.MaxBitmaps}"),
            Qcow2Rule.BitmapsExtensionReserved => (e.Field, e.Offset, "bitmaps_ext: Reserved field is not zero"),
            Qcow2Rule.BitmapDirectoryTooLarge => ("bitmap_directory_size", BitmapsExtension.DirectorySizeOffset, "bitmaps_ext: bitmap directory size exceeds the QEMU supported maximum"),
            Qcow2Rule.BitmapDirectoryOffsetInvalid => ("bitmap_directory_offset", BitmapsExtension.DirectoryOffsetOffset, "bitmaps_ext: invalid bitmap directory offset"),
            Qcow2Rule.BitmapEntryTruncated => (e.Field, e.Offset, "bitmap directory entry runs past the directory size"),
            Qcow2Rule.BitmapEntryInvalid => (e.Field, e.Offset, $"bitmap directory entry {e.Index} is invalid"),
            Qcow2Rule.SnapshotExtraDataTooLarge => (e.Field, e.Offset, $"Too much extra metadata in snapshot table entry {e.Index}"),
            Qcow2Rule.SnapshotTableTooBig => ("nb_snapshots", Qcow2Header.NbSnapshotsOffset, "Snapshot table is too big"),
            _ => (e.Field, e.Offset, e.Problem),
        };
    }

    private static string FeatureList(Qcow2FormatException e)
    {
        var names = new List<string>(e.FeatureNames);
        if (e.Value != 0) names.Add($"Unknown incompatible feature: {e.Value:x}");
        return string.Join(", ", names);
    }
}
