using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

/// <summary>
/// The profiles apply one set of rules: the same bytes break the same <see cref="Qcow2Rule"/>
/// under open, info and check, except where QEMU's own callers differ.
/// </summary>
public class ValidationProfileTests
{
    private static readonly ValidationProfile[] All = [ValidationProfile.Open, ValidationProfile.Info, ValidationProfile.Check];

    private static byte[] Image()
    {
        var h = Qcow2Header.CreateNew(1 << 20, 16);
        h.RefcountTableOffset = 0x10000;
        h.L1TableOffset = 0x30000;
        var c = new byte[h.ClusterSize];
        new ImageHeaderBlock(h) { FeatureNames = FeatureNameTable.QemuDefault() }.Write(c);
        return c;
    }

    private static Qcow2Rule? RuleOf(byte[] c, ValidationProfile profile)
    {
        try
        {
            ImageHeaderBlock.Read(c, IncompatibleFeatures.KnownToQemu, profile);
            return null;
        }
        catch (Qcow2FormatException e)
        {
            return e.Rule;
        }
    }

    public static TheoryData<string, Qcow2Rule> Damage() => new()
    {
        { "magic", Qcow2Rule.BadMagic },
        { "version", Qcow2Rule.UnsupportedVersion },
        { "cluster_bits", Qcow2Rule.ClusterBitsOutOfRange },
        { "refcount_order", Qcow2Rule.RefcountOrderTooLarge },
        { "incompatible bit 40", Qcow2Rule.UnsupportedIncompatibleFeature },
        { "l1_table_offset", Qcow2Rule.L1TableOffsetInvalid },
        { "refcount_table_offset", Qcow2Rule.RefcountTableOffsetInvalid },
    };

    [Theory]
    [MemberData(nameof(Damage))]
    public void Every_profile_reports_the_same_rule_for_the_same_damage(string damage, Qcow2Rule rule)
    {
        var c = Image();
        switch (damage)
        {
            case "magic": U32(c, Qcow2Header.MagicOffset, 0); break;
            case "version": U32(c, Qcow2Header.VersionOffset, 1); break;
            case "cluster_bits": U32(c, Qcow2Header.ClusterBitsOffset, 30); break;
            case "refcount_order": U32(c, Qcow2Header.RefcountOrderOffset, 9); break;
            case "incompatible bit 40": U64(c, Qcow2Header.IncompatibleFeaturesOffset, 1UL << 40); break;
            case "l1_table_offset": U64(c, Qcow2Header.L1TableOffsetOffset, 0x30008); break;
            case "refcount_table_offset": U64(c, Qcow2Header.RefcountTableOffsetOffset, 0x10200); break;
        }
        Assert.All(All, p => Assert.Equal(rule, RuleOf(c, p)));
    }

    [Fact]
    public void Only_check_opens_an_image_without_a_refcount_table_or_with_a_bad_snapshot_table_pointer()
    {
        var c = Image();
        U32(c, Qcow2Header.RefcountTableClustersOffset, 0);
        Assert.Equal(Qcow2Rule.NoRefcountTable, RuleOf(c, ValidationProfile.Open));
        Assert.Equal(Qcow2Rule.NoRefcountTable, RuleOf(c, ValidationProfile.Info));
        Assert.Null(RuleOf(c, ValidationProfile.Check));

        c = Image();
        U32(c, Qcow2Header.NbSnapshotsOffset, 1);
        U64(c, Qcow2Header.SnapshotsOffsetOffset, 0x40008);
        Assert.Equal(Qcow2Rule.SnapshotTableOffsetInvalid, RuleOf(c, ValidationProfile.Open));
        Assert.Equal(Qcow2Rule.SnapshotTableOffsetInvalid, RuleOf(c, ValidationProfile.Info));
        Assert.Null(RuleOf(c, ValidationProfile.Check));
    }

    [Fact]
    public void An_extension_area_ending_in_a_fragment_is_refused_only_by_open_as_qemu_stops_there()
    {
        var h = Qcow2Header.CreateNew(1 << 20, 9);
        h.RefcountTableOffset = 0x200;
        h.L1TableOffset = 0x400;
        h.BackingFileOffset = 116;
        h.BackingFileSize = 1;
        var c = new byte[512];
        h.Write(c);
        U32(c, 112, 0x11111111);
        c[116] = (byte)'x';
        Assert.Equal(Qcow2Rule.ExtensionTruncated, RuleOf(c, ValidationProfile.Open));
        Assert.Null(RuleOf(c, ValidationProfile.Info));
        Assert.Null(RuleOf(c, ValidationProfile.Check));
    }

    [Fact]
    public void A_ragged_feature_name_table_is_read_for_names_outside_open()
    {
        var c = Image();
        // Shorten the table by one byte: QEMU only looks names up and ignores the ragged tail.
        var at = Qcow2Header.V3DefaultHeaderLength;
        Assert.Equal(HeaderExtensionType.FeatureNameTable, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(c.AsSpan(at)));
        var len = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(c.AsSpan(at + 4));
        U32(c, at + 4, len - 1);
        Assert.Equal(Qcow2Rule.FeatureNameTableMalformed, RuleOf(c, ValidationProfile.Open));
        var block = ImageHeaderBlock.Read(c, IncompatibleFeatures.KnownToQemu, ValidationProfile.Info);
        Assert.Equal(FeatureNameTable.QemuDefault().Entries.Count - 1, block.FeatureNames!.Entries.Count);
    }

    [Fact]
    public void Unsupported_bits_are_named_in_table_order_and_the_unnamed_rest_is_the_value()
    {
        var c = Image();
        U64(c, Qcow2Header.IncompatibleFeaturesOffset, (1UL << 40) | (1UL << 9));
        var table = new FeatureNameTable([new(FeatureType.Incompatible, 9, "future thing")]);
        var h = Qcow2Header.Read(c);
        var e = Assert.Throws<Qcow2FormatException>(() => h.CheckIncompatibleFeatures(IncompatibleFeatures.KnownToQemu, table));
        Assert.Equal(Qcow2Rule.UnsupportedIncompatibleFeature, e.Rule);
        Assert.Equal(["future thing"], e.FeatureNames);
        Assert.Equal(1UL << 40, e.Value);
        Assert.Equal(Qcow2Header.IncompatibleFeaturesOffset, e.Offset);
    }

    [Fact]
    public void A_v3_snapshot_without_its_extra_data_is_refused_by_open_and_kept_for_check_to_report()
    {
        var entry = new byte[SnapshotEntry.FixedSize + 2];
        U16(entry, SnapshotEntry.IdSizeOffset, 1);
        U16(entry, SnapshotEntry.NameSizeOffset, 1);
        entry[SnapshotEntry.FixedSize] = (byte)'1';
        entry[SnapshotEntry.FixedSize + 1] = (byte)'a';
        var open = Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(entry, 1, 3, 0x50000, ValidationProfile.Open, out _));
        Assert.Equal(Qcow2Rule.SnapshotExtraDataTooSmall, open.Rule);
        Assert.Equal(0x50000 + SnapshotEntry.ExtraDataSizeOffset, open.Offset);
        var kept = Assert.Single(SnapshotTable.Read(entry, 1, 3, 0x50000, ValidationProfile.Check, out long size));
        Assert.Equal(0u, kept.ExtraDataSize);
        Assert.Equal(("1", "a"), (kept.Id, kept.Name));
        Assert.Equal(entry.Length, size);
    }

    [Fact]
    public void A_snapshot_entry_past_the_bytes_given_says_so_by_rule_so_the_reader_can_read_more()
    {
        var e = Assert.Throws<Qcow2FormatException>(() => SnapshotTable.Read(new byte[20], 1, 3, 0, ValidationProfile.Info, out _));
        Assert.Equal(Qcow2Rule.SnapshotEntryTruncated, e.Rule);
        Assert.Equal(0, e.Index);
    }

    [Fact]
    public void L2_table_words_round_trip_big_endian()
    {
        var table = new byte[64];
        for (int i = 0; i < table.Length; i++) table[i] = (byte)(i * 7 + 1);
        var words = new ulong[8];
        L2Table.DecodeWords(table, words);
        Assert.Equal(L2Table.ReadEntry(table, 3, extended: false).Word0, words[3]);
        var back = new byte[64];
        L2Table.EncodeWords(words, back);
        Assert.Equal(table, back);
    }
}
