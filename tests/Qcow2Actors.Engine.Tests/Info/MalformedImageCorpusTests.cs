using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Info;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Tests.Shared.ImageFileBytes;
using static Qcow2Actors.Tests.Shared.QemuTools;

namespace Qcow2Actors.Engine.Tests.Info;

/// <summary>
/// One corpus of damaged images, each a good image from our creator (or qemu-img) broken at a
/// named offset, shown to the three readers: <see cref="Qcow2Image.OpenAsync"/>, <see cref="ImageInfo"/>
/// and <see cref="ImageChecker"/>. Header-level damage must be refused by all three under the same
/// <see cref="Qcow2Rule"/>, in one line naming the field and its offset. Damage QEMU leaves to
/// <c>qemu-img check</c> must be refused (or not) by open and info as qemu-img info refuses it, and
/// checked with qemu-img check's exit code.
/// </summary>
public sealed class MalformedImageCorpusTests
{
    private enum Base { V3, Snapshot, ExtendedPreallocated }

    /// <param name="Rule">The rule open and info report; null when both accept the image.</param>
    /// <param name="CheckRefusesToo">Check refuses with the same rule; otherwise it checks and its exit code must equal qemu-img check's.</param>
    private sealed record Case(Base From, Action<string> Patch, Qcow2Rule? Rule, bool CheckRefusesToo);

    private static void Or64(string p, long off, ulong bits) => WriteU64(p, off, ReadU64(p, off) | bits);

    private static long FeatureTable(string p) => FindExtension(p, HeaderExtensionType.FeatureNameTable);

    private static long FindExtension(string p, uint type)
    {
        for (long off = Qcow2Header.V3DefaultHeaderLength; off < 4096;)
        {
            var t = ReadU32(p, off);
            if (t == type) return off;
            if (t == HeaderExtensionType.End) break;
            off += HeaderExtension.StoredSizeOf((int)ReadU32(p, off + HeaderExtension.LengthOffset));
        }
        throw new InvalidOperationException($"no extension 0x{type:X8} in {p}");
    }

    private static readonly Dictionary<string, Case> Cases = new()
    {
        ["magic"] = new(Base.V3, p => WriteU32(p, Qcow2Header.MagicOffset, 0x12345678), Qcow2Rule.BadMagic, true),
        ["version 4"] = new(Base.V3, p => WriteU32(p, Qcow2Header.VersionOffset, 4), Qcow2Rule.UnsupportedVersion, true),
        ["cluster_bits 8"] = new(Base.V3, p => WriteU32(p, Qcow2Header.ClusterBitsOffset, 8), Qcow2Rule.ClusterBitsOutOfRange, true),
        ["cluster_bits 22"] = new(Base.V3, p => WriteU32(p, Qcow2Header.ClusterBitsOffset, 22), Qcow2Rule.ClusterBitsOutOfRange, true),
        ["header_length unaligned"] = new(Base.V3, p => WriteU32(p, Qcow2Header.HeaderLengthOffset, 108), Qcow2Rule.HeaderLengthUnaligned, true),
        ["refcount_order 7"] = new(Base.V3, p => WriteU32(p, Qcow2Header.RefcountOrderOffset, 7), Qcow2Rule.RefcountOrderTooLarge, true),
        ["crypt_method 3"] = new(Base.V3, p => WriteU32(p, Qcow2Header.CryptMethodOffset, 3), Qcow2Rule.CryptMethodUnknown, true),
        ["backing_file_offset past cluster 0"] = new(Base.V3, p => WriteU64(p, Qcow2Header.BackingFileOffsetOffset, 0x20000), Qcow2Rule.BackingFileOffsetInvalid, true),
        ["compression bit without a compression type"] = new(Base.V3, p => Or64(p, Qcow2Header.IncompatibleFeaturesOffset, (ulong)IncompatibleFeatures.CompressionType), Qcow2Rule.CompressionBitWithoutType, true),
        ["unknown incompatible bit 40"] = new(Base.V3, p => Or64(p, Qcow2Header.IncompatibleFeaturesOffset, 1UL << 40), Qcow2Rule.UnsupportedIncompatibleFeature, true),
        ["extension length past cluster 0"] = new(Base.V3, p => WriteU32(p, FeatureTable(p) + HeaderExtension.LengthOffset, 0x20000), Qcow2Rule.ExtensionTooLarge, true),
        // QEMU judges a bitmaps extension's length before it looks at autoclear bit 0, so even a stale one is refused.
        ["bitmaps extension of length 5"] = new(Base.V3, p =>
        {
            var after = FeatureTable(p) + HeaderExtension.StoredSizeOf((int)ReadU32(p, FeatureTable(p) + HeaderExtension.LengthOffset));
            WriteU32(p, after + HeaderExtension.TypeOffset, HeaderExtensionType.Bitmaps);
            WriteU32(p, after + HeaderExtension.LengthOffset, 5);
        }, Qcow2Rule.BitmapsExtensionLength, true),
        ["l1_table_offset unaligned"] = new(Base.V3, p => WriteU64(p, Qcow2Header.L1TableOffsetOffset, ReadU64(p, Qcow2Header.L1TableOffsetOffset) + 8), Qcow2Rule.L1TableOffsetInvalid, true),
        ["l1_size too small for the size"] = new(Base.V3, p => WriteU64(p, Qcow2Header.SizeOffset, 1UL << 40), Qcow2Rule.L1TableTooSmall, true),
        ["refcount_table_clusters above 8 MiB"] = new(Base.V3, p => WriteU32(p, Qcow2Header.RefcountTableClustersOffset, 1u << 20), Qcow2Rule.RefcountTableTooLarge, true),
        // QEMU's check opens what its info refuses here, and counts the damage instead.
        ["refcount_table_clusters 0"] = new(Base.V3, p => WriteU32(p, Qcow2Header.RefcountTableClustersOffset, 0), Qcow2Rule.NoRefcountTable, false),
        ["nb_snapshots 100000"] = new(Base.V3, p => WriteU32(p, Qcow2Header.NbSnapshotsOffset, 100000), Qcow2Rule.SnapshotTableTooLarge, false),
        ["snapshots_offset unaligned"] = new(Base.Snapshot, p => WriteU64(p, Qcow2Header.SnapshotsOffsetOffset, ReadU64(p, Qcow2Header.SnapshotsOffsetOffset) + 8), Qcow2Rule.SnapshotTableOffsetInvalid, false),
        ["snapshot extra_data_size 5000"] = new(Base.Snapshot, p => WriteU32(p, (long)ReadU64(p, Qcow2Header.SnapshotsOffsetOffset) + SnapshotEntry.ExtraDataSizeOffset, 5000), Qcow2Rule.SnapshotExtraDataTooLarge, false),
        // Damage inside the tables: every opener accepts it; only check (and a read that reaches it) finds it.
        ["refcount table overlapping the header"] = new(Base.V3, p => WriteU64(p, Qcow2Header.RefcountTableOffsetOffset, 0), null, false),
        ["compressed entry with a subcluster bitmap in an extended L2 table"] = new(Base.ExtendedPreallocated, p =>
        {
            var l2 = (long)(ReadU64(p, (long)ReadU64(p, Qcow2Header.L1TableOffsetOffset)) & L1Entry.OffsetMask);
            WriteU64(p, l2, L2Entry.CompressedFlag | 0x10000);
            WriteU64(p, l2 + 8, 1);
        }, null, false),
    };

    public static TheoryData<string> Names() => new(Cases.Keys);

    [QemuTheory]
    [MemberData(nameof(Names))]
    public async Task Open_info_and_check_agree_on_every_damaged_image(string name)
    {
        var c = Cases[name];
        using var dir = new TempDir();
        var path = dir.File("img.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions
        {
            Size = 4 << 20,
            ExtendedL2 = c.From == Base.ExtendedPreallocated,
            Preallocation = c.From == Base.ExtendedPreallocated ? Preallocation.Metadata : Preallocation.Off,
        });
        if (c.From == Base.Snapshot) QemuImg("snapshot", "-c", "s1", path).EnsureSuccess();
        c.Patch(path);

        var open = await OpenFailure(path);
        var info = Failure(() => ImageInfo.ReadChain(path, backingChain: false));
        var qemuInfo = QemuImg("info", "-f", "qcow2", path);
        if (c.Rule is { } rule)
        {
            AssertRefusal(rule, open);
            AssertRefusal(rule, info);
            Assert.Equal(1, qemuInfo.ExitCode);
        }
        else
        {
            Assert.Null(open);
            Assert.Null(info);
            Assert.Equal(0, qemuInfo.ExitCode);
        }

        CheckResult? result = null;
        var check = Failure(() => result = ImageChecker.CheckFile(path));
        if (c.CheckRefusesToo)
        {
            AssertRefusal(c.Rule!.Value, check);
            Assert.Equal(1, QemuImg("check", "-f", "qcow2", path).ExitCode);
        }
        else
        {
            Assert.Null(check);
            Assert.NotEqual(0, result!.ExitCode);
            Assert.Equal(QemuImg("check", "-f", "qcow2", path).ExitCode, result.ExitCode);
        }
    }

    private static void AssertRefusal(Qcow2Rule rule, Qcow2FormatException? e)
    {
        Assert.NotNull(e);
        Assert.Equal(rule, e.Rule);
        // One line naming the field and its offset.
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith($"invalid {e.Field} at offset {e.Offset} ", e.Message, StringComparison.Ordinal);
    }

    private static Qcow2FormatException? Failure(Action action)
    {
        try
        {
            action();
            return null;
        }
        catch (Exception e) when (Find(e) is { } format)
        {
            return format;
        }
    }

    private static async Task<Qcow2FormatException?> OpenFailure(string path)
    {
        try
        {
            // As qemu-img info -f qcow2: without a format a file lacking the magic would be probed as raw.
            await using var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { Format = "qcow2" });
            return null;
        }
        catch (Exception e) when (Find(e) is { } format)
        {
            return format;
        }
    }

    private static Qcow2FormatException? Find(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is Qcow2FormatException f) return f;
        return null;
    }
}
