using CsCheck;
using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

public class Qcow2HeaderTests
{
    private static Qcow2FormatException Refused(byte[] bytes) => Assert.Throws<Qcow2FormatException>(() => Qcow2Header.Read(bytes));

    private static void AssertSame(Qcow2Header a, Qcow2Header b)
    {
        Assert.Equal(a.Version, b.Version);
        Assert.Equal(a.BackingFileOffset, b.BackingFileOffset);
        Assert.Equal(a.BackingFileSize, b.BackingFileSize);
        Assert.Equal(a.ClusterBits, b.ClusterBits);
        Assert.Equal(a.Size, b.Size);
        Assert.Equal(a.CryptMethod, b.CryptMethod);
        Assert.Equal(a.L1Size, b.L1Size);
        Assert.Equal(a.L1TableOffset, b.L1TableOffset);
        Assert.Equal(a.RefcountTableOffset, b.RefcountTableOffset);
        Assert.Equal(a.RefcountTableClusters, b.RefcountTableClusters);
        Assert.Equal(a.NbSnapshots, b.NbSnapshots);
        Assert.Equal(a.SnapshotsOffset, b.SnapshotsOffset);
        Assert.Equal(a.IncompatibleFeatures, b.IncompatibleFeatures);
        Assert.Equal(a.CompatibleFeatures, b.CompatibleFeatures);
        Assert.Equal(a.AutoclearFeatures, b.AutoclearFeatures);
        Assert.Equal(a.RefcountOrder, b.RefcountOrder);
        Assert.Equal(a.HeaderLength, b.HeaderLength);
        Assert.Equal(a.CompressionType, b.CompressionType);
        Assert.Equal(a.UnknownAdditionalFields, b.UnknownAdditionalFields);
    }

    private static readonly Gen<Qcow2Header> GenHeader =
        from version in Gen.Int[2, 3]
        from clusterBits in Gen.Int[9, 21]
        from extended in Gen.Bool
        from zstd in Gen.Bool
        from lazy in Gen.Bool
        from order in Gen.Int[0, 6]
        from size in Gen.Long[0, 1L << 40]
        from l1Extra in Gen.Int[0, 100]
        from l1Cl in Gen.Long[0, 1L << 30]
        from rtCl in Gen.Long[0, 1L << 30]
        from snCl in Gen.Long[0, 1L << 30]
        from nbSn in Gen.Int[0, 65536]
        from rtClusters in Gen.Int[1, 4]
        from compat in Gen.ULong
        from autoclearRaw in Gen.Bool
        from dirty in Gen.Bool
        from extraWords in Gen.Int[0, 3]
        from extraByte in Gen.Byte
        where !(extended && clusterBits < 14)
        let v3 = version == 3
        let ext = v3 && extended
        let minL1 = Qcow2Header.RequiredL1Size(size, clusterBits, ext)
        where minL1 + l1Extra <= Qcow2Header.MaxL1Size
        where ((long)rtClusters << clusterBits) <= Qcow2Header.MaxRefcountTableBytes
        select new Qcow2Header
        {
            Version = version,
            ClusterBits = clusterBits,
            Size = size,
            L1Size = (int)(minL1 + l1Extra),
            L1TableOffset = l1Cl << clusterBits,
            RefcountTableOffset = rtCl << clusterBits,
            RefcountTableClusters = rtClusters,
            NbSnapshots = nbSn,
            SnapshotsOffset = snCl << clusterBits,
            RefcountOrder = v3 ? order : 4,
            HeaderLength = v3 ? 112 + 8 * extraWords : 72,
            IncompatibleFeatures = !v3 ? IncompatibleFeatures.None
                : (ext ? IncompatibleFeatures.ExtendedL2 : 0) | (zstd ? IncompatibleFeatures.CompressionType : 0)
                  | (dirty ? IncompatibleFeatures.Dirty : 0) | (autoclearRaw ? IncompatibleFeatures.ExternalDataFile : 0),
            CompatibleFeatures = v3 ? (CompatibleFeatures)compat | (lazy ? CompatibleFeatures.LazyRefcounts : 0) : 0,
            AutoclearFeatures = v3 && autoclearRaw ? AutoclearFeatures.RawExternalData : 0,
            CompressionType = v3 && zstd ? CompressionType.Zstd : CompressionType.Zlib,
            UnknownAdditionalFields = v3 ? Enumerable.Repeat(extraByte, 8 * extraWords).ToArray() : [],
        };

    [Fact]
    public void Write_then_Read_round_trips_every_field()
    {
        GenHeader.Sample(h =>
        {
            var bytes = new byte[h.HeaderLength];
            Assert.Equal(h.HeaderLength, h.Write(bytes));
            AssertSame(h, Qcow2Header.Read(bytes));
        });
    }

    [Fact]
    public void Read_then_Write_reproduces_the_bytes()
    {
        GenHeader.Sample(h =>
        {
            var bytes = new byte[h.HeaderLength];
            h.Write(bytes);
            var again = new byte[h.HeaderLength];
            Qcow2Header.Read(bytes).Write(again);
            Assert.Equal(bytes, again);
        });
    }

    [Fact]
    public void Clone_is_deep()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.HeaderLength = 120;
        h.UnknownAdditionalFields = [1, 2, 3, 4, 5, 6, 7, 8];
        var c = h.Clone();
        c.UnknownAdditionalFields[0] = 99;
        c.Size = 5;
        Assert.Equal(1, h.UnknownAdditionalFields[0]);
        Assert.Equal(1 << 20, h.Size);
    }

    [Fact]
    public void Fields_sit_at_the_documented_offsets()
    {
        var h = new Qcow2Header
        {
            Version = 3, BackingFileOffset = 0x210, BackingFileSize = 9, ClusterBits = 16, Size = 0x40000000,
            CryptMethod = CryptMethod.None, L1Size = 8, L1TableOffset = 0x30000, RefcountTableOffset = 0x10000,
            RefcountTableClusters = 1, NbSnapshots = 2, SnapshotsOffset = 0x50000,
            IncompatibleFeatures = IncompatibleFeatures.CompressionType, CompatibleFeatures = CompatibleFeatures.LazyRefcounts,
            AutoclearFeatures = AutoclearFeatures.Bitmaps, RefcountOrder = 4, HeaderLength = 112, CompressionType = CompressionType.Zstd,
        };
        var b = new byte[112];
        h.Write(b);
        Assert.Equal(Hex(
            "514649FB 00000003 0000000000000210 00000009 00000010 0000000040000000 00000000 00000008" +
            "0000000000030000 0000000000010000 00000001 00000002 0000000000050000" +
            "0000000000000008 0000000000000001 0000000000000001 00000004 00000070" +
            "01 00000000000000"), b);
    }

    [Fact]
    public void Derived_values_follow_cluster_bits_refcount_order_and_extended_l2()
    {
        var h = Qcow2Header.CreateNew(1L << 30, 16, refcountOrder: 4, extendedL2: true);
        Assert.Equal(65536, h.ClusterSize);
        Assert.Equal(16, h.RefcountBits);
        Assert.Equal(32768, h.RefcountBlockEntries);
        Assert.Equal(8192, h.RefcountTableEntries);
        Assert.True(h.HasExtendedL2);
        Assert.Equal(16, h.L2EntrySize);
        Assert.Equal(4096, h.L2Entries);
        Assert.Equal(2048, h.SubclusterSize);
        Assert.Equal(4, h.L1Size); // 1 GiB / (64 KiB * 4096)
        var std = Qcow2Header.CreateNew(1L << 30, 16);
        Assert.Equal(8192, std.L2Entries);
        Assert.Equal(65536, std.SubclusterSize);
        Assert.Equal(2, std.L1Size);
        std.IncompatibleFeatures |= IncompatibleFeatures.Dirty | IncompatibleFeatures.Corrupt | IncompatibleFeatures.ExternalDataFile | IncompatibleFeatures.JournalPending;
        Assert.True(std.IsDirty && std.IsCorrupt && std.HasExternalDataFile && std.IsJournalPending);
    }

    [Fact]
    public void CreateNew_v2_writes_a_72_byte_header_with_16_bit_refcounts()
    {
        var h = Qcow2Header.CreateNew(1 << 20, version: 2);
        var b = new byte[200];
        Array.Fill(b, (byte)0xEE);
        Assert.Equal(72, h.Write(b));
        Assert.Equal(0xEE, b[72]);
        var r = Qcow2Header.Read(b);
        Assert.Equal(2, r.Version);
        Assert.Equal(4, r.RefcountOrder);
        Assert.Equal(72, r.HeaderLength);
        Assert.Equal(IncompatibleFeatures.None, r.IncompatibleFeatures);
    }

    [Fact]
    public void Read_ignores_bytes_past_72_in_a_v2_header()
    {
        var b = Header(Qcow2Header.CreateNew(1 << 20, version: 2));
        for (int i = 72; i < 112; i++) b[i] = 0xFF;
        var h = Qcow2Header.Read(b);
        Assert.Equal(IncompatibleFeatures.None, h.IncompatibleFeatures);
        Assert.Equal(CompatibleFeatures.None, h.CompatibleFeatures);
        Assert.Equal(AutoclearFeatures.None, h.AutoclearFeatures);
        Assert.Equal(4, h.RefcountOrder);
        Assert.Equal(CompressionType.Zlib, h.CompressionType);
    }

    [Fact]
    public void Read_accepts_a_104_byte_header_without_compression_type()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.HeaderLength = 104;
        var b = Header(h);
        b[104] = 7; // past header_length: an extension area byte, not a field
        Assert.Equal(CompressionType.Zlib, Qcow2Header.Read(b).CompressionType);
    }

    [Fact]
    public void Read_keeps_unknown_additional_fields_and_Write_puts_them_back()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.HeaderLength = 128;
        h.UnknownAdditionalFields = Enumerable.Range(1, 16).Select(i => (byte)i).ToArray();
        var b = Header(h);
        var r = Qcow2Header.Read(b);
        Assert.Equal(h.UnknownAdditionalFields, r.UnknownAdditionalFields);
        var again = new byte[128];
        r.Write(again);
        Assert.Equal(b.AsSpan(0, 128).ToArray(), again);
    }

    [Fact]
    public void Write_refuses_v3_only_fields_in_a_v2_header()
    {
        var h = Qcow2Header.CreateNew(1 << 20, version: 2);
        h.IncompatibleFeatures = IncompatibleFeatures.Dirty;
        Assert.Throws<InvalidOperationException>(() => h.Write(new byte[72]));
        h.IncompatibleFeatures = 0;
        h.RefcountOrder = 3;
        Assert.Throws<InvalidOperationException>(() => h.Write(new byte[72]));
    }

    [Fact]
    public void Write_refuses_a_header_length_that_drops_kept_bytes()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.UnknownAdditionalFields = new byte[8];
        Assert.Throws<InvalidOperationException>(() => h.Write(new byte[200]));
    }

    [Fact]
    public void Read_refuses_a_wrong_magic()
    {
        var b = ValidV3();
        b[3] = 0xFA;
        var e = Refused(b);
        Assert.Equal("magic", e.Field);
        Assert.Equal(0, e.Offset);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(1u)]
    [InlineData(4u)]
    public void Read_refuses_versions_other_than_2_and_3(uint version)
    {
        var b = ValidV3();
        U32(b, Qcow2Header.VersionOffset, version);
        Assert.Equal("version", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_input_shorter_than_a_v2_header() =>
        Assert.Equal("header", Refused(ValidV3()[..71]).Field);

    [Fact]
    public void Read_refuses_input_shorter_than_header_length() =>
        Assert.Equal("header_length", Refused(ValidV3()[..108]).Field);

    [Theory]
    [InlineData(8u)]
    [InlineData(22u)]
    [InlineData(63u)]
    public void Read_refuses_cluster_bits_outside_9_to_21(uint bits)
    {
        var b = ValidV3();
        U32(b, Qcow2Header.ClusterBitsOffset, bits);
        var e = Refused(b);
        Assert.Equal("cluster_bits", e.Field);
        Assert.Equal(20, e.Offset);
    }

    [Fact]
    public void Read_refuses_cluster_bits_above_21()
    {
        var b = ValidV3();
        U32(b, Qcow2Header.ClusterBitsOffset, 22);
        Assert.Equal("invalid cluster_bits at offset 20 (0x14): 22 is outside 9..21 (512 B to 2 MiB clusters, QEMU's limit)", Refused(b).Message);
    }

    [Fact]
    public void Read_refuses_extended_l2_with_clusters_below_16_KiB()
    {
        var h = Qcow2Header.CreateNew(1 << 20, 14, extendedL2: true);
        var b = Header(h);
        U32(b, Qcow2Header.ClusterBitsOffset, 13);
        Assert.Equal("cluster_bits", Refused(b).Field);
    }

    [Theory]
    [InlineData(96u)]
    [InlineData(100u)]
    [InlineData(108u)]
    [InlineData(8192u)]
    public void Read_refuses_bad_v3_header_lengths(uint length)
    {
        var b = ValidV3(12);
        U32(b, Qcow2Header.HeaderLengthOffset, length);
        var e = Refused(b);
        Assert.Equal("header_length", e.Field);
        Assert.Equal(100, e.Offset);
    }

    [Fact]
    public void Read_refuses_refcount_order_above_6()
    {
        var b = ValidV3();
        U32(b, Qcow2Header.RefcountOrderOffset, 7);
        Assert.Equal("refcount_order", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_an_unknown_compression_type()
    {
        var b = Header(Qcow2Header.CreateNew(1 << 20, compressionType: CompressionType.Zstd));
        b[104] = 2;
        Assert.Equal("compression_type", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_compression_bit_without_compression_type()
    {
        var b = ValidV3();
        U64(b, Qcow2Header.IncompatibleFeaturesOffset, (ulong)IncompatibleFeatures.CompressionType);
        var e = Refused(b);
        Assert.Equal("compression_type", e.Field);
        Assert.Equal(104, e.Offset);
    }

    [Fact]
    public void Read_refuses_compression_type_without_compression_bit()
    {
        var b = ValidV3();
        b[104] = 1;
        Assert.Equal("compression_type", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_raw_external_data_without_external_data_file()
    {
        var b = ValidV3();
        U64(b, Qcow2Header.AutoclearFeaturesOffset, (ulong)AutoclearFeatures.RawExternalData);
        var e = Refused(b);
        Assert.Equal("autoclear_features", e.Field);
        Assert.Equal(88, e.Offset);
    }

    [Fact]
    public void Read_refuses_raw_external_data_with_a_backing_file()
    {
        var b = ValidV3();
        U64(b, Qcow2Header.IncompatibleFeaturesOffset, (ulong)IncompatibleFeatures.ExternalDataFile);
        U64(b, Qcow2Header.AutoclearFeaturesOffset, (ulong)AutoclearFeatures.RawExternalData);
        Assert.Equal(AutoclearFeatures.RawExternalData, Qcow2Header.Read(b).AutoclearFeatures);
        U64(b, Qcow2Header.BackingFileOffsetOffset, 512);
        U32(b, Qcow2Header.BackingFileSizeOffset, 4);
        Assert.Equal("autoclear_features", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_an_unknown_crypt_method()
    {
        var b = ValidV3();
        U32(b, Qcow2Header.CryptMethodOffset, 3);
        Assert.Equal("crypt_method", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_a_backing_file_offset_beyond_cluster_0()
    {
        var b = ValidV3(12);
        U64(b, Qcow2Header.BackingFileOffsetOffset, 4097);
        Assert.Equal("backing_file_offset", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_a_backing_file_offset_inside_the_header()
    {
        var b = ValidV3(12);
        U64(b, Qcow2Header.BackingFileOffsetOffset, 64);
        Assert.Equal("backing_file_offset", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_a_backing_file_name_longer_than_1023()
    {
        var b = ValidV3();
        U64(b, Qcow2Header.BackingFileOffsetOffset, 512);
        U32(b, Qcow2Header.BackingFileSizeOffset, 1024);
        var e = Refused(b);
        Assert.Equal("backing_file_size", e.Field);
        Assert.Equal(16, e.Offset);
    }

    [Fact]
    public void Read_refuses_a_backing_file_name_that_leaves_cluster_0()
    {
        var b = ValidV3(10);
        U64(b, Qcow2Header.BackingFileOffsetOffset, 1000);
        U32(b, Qcow2Header.BackingFileSizeOffset, 25);
        Assert.Equal("backing_file_size", Refused(b).Field);
    }

    [Theory]
    [InlineData(Qcow2Header.L1TableOffsetOffset, "l1_table_offset")]
    [InlineData(Qcow2Header.RefcountTableOffsetOffset, "refcount_table_offset")]
    [InlineData(Qcow2Header.SnapshotsOffsetOffset, "snapshots_offset")]
    public void Read_refuses_unaligned_table_offsets(int at, string field)
    {
        var b = ValidV3();
        U64(b, at, 0x10200);
        var e = Refused(b);
        Assert.Equal(field, e.Field);
        Assert.Equal(at, e.Offset);
    }

    [Theory]
    [InlineData(Qcow2Header.L1TableOffsetOffset, "l1_table_offset")]
    [InlineData(Qcow2Header.RefcountTableOffsetOffset, "refcount_table_offset")]
    [InlineData(Qcow2Header.SnapshotsOffsetOffset, "snapshots_offset")]
    public void Read_refuses_tables_that_end_past_INT64_MAX(int at, string field)
    {
        var b = ValidV3();
        U32(b, Qcow2Header.NbSnapshotsOffset, 2000); // 80000 bytes of entry headers
        U32(b, Qcow2Header.L1SizeOffset, 8193);       // 65544 bytes
        U64(b, at, 0x7FFFFFFFFFFF0000);
        Assert.Equal(field, Refused(b).Field);
        U64(b, at, 0x8000000000000000);
        Assert.Equal(field, Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_an_image_without_a_refcount_table()
    {
        var b = ValidV3();
        U32(b, Qcow2Header.RefcountTableClustersOffset, 0);
        Assert.Equal("refcount_table_clusters", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_a_refcount_table_above_8_MiB()
    {
        var b = ValidV3();
        U32(b, Qcow2Header.RefcountTableClustersOffset, 128);
        Qcow2Header.Read(b);
        U32(b, Qcow2Header.RefcountTableClustersOffset, 129);
        Assert.Equal("refcount_table_clusters", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_l1_size_above_QEMUs_limit_with_a_one_line_message()
    {
        var b = ValidV3();
        U32(b, Qcow2Header.L1SizeOffset, 40000000);
        var e = Refused(b);
        Assert.Equal("l1_size", e.Field);
        Assert.Equal(36, e.Offset);
        Assert.Equal("invalid l1_size at offset 36 (0x24): 40000000 entries exceed QEMU's limit of 4194304", e.Message);
    }

    [Fact]
    public void Read_refuses_more_than_65536_snapshots()
    {
        var b = ValidV3();
        U32(b, Qcow2Header.NbSnapshotsOffset, 65536);
        Qcow2Header.Read(b);
        U32(b, Qcow2Header.NbSnapshotsOffset, 65537);
        Assert.Equal("nb_snapshots", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_an_l1_table_too_small_for_the_virtual_size()
    {
        var b = ValidV3(16, 1L << 30); // needs 2 entries
        U32(b, Qcow2Header.L1SizeOffset, 1);
        Assert.Equal("l1_size", Refused(b).Field);
    }

    [Fact]
    public void Read_refuses_a_size_above_INT64_MAX()
    {
        var b = ValidV3();
        U64(b, Qcow2Header.SizeOffset, ulong.MaxValue);
        Assert.Equal("size", Refused(b).Field);
    }

    [Fact]
    public void Read_leaves_unknown_incompatible_bits_to_the_feature_check()
    {
        var b = ValidV3();
        U64(b, Qcow2Header.IncompatibleFeaturesOffset, 1UL << 5);
        var h = Qcow2Header.Read(b);
        var e = Assert.Throws<Qcow2FormatException>(() => h.CheckIncompatibleFeatures(IncompatibleFeatures.KnownToQcow2Actors));
        Assert.Equal("incompatible_features", e.Field);
        Assert.Equal(72, e.Offset);
        Assert.Equal("invalid incompatible_features at offset 72 (0x48): unsupported incompatible feature bit 5", e.Message);
    }

    [Fact]
    public void CheckIncompatibleFeatures_names_the_journal_bit_from_the_feature_table()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.IncompatibleFeatures = IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending;
        h.CheckIncompatibleFeatures(IncompatibleFeatures.KnownToQcow2Actors);
        var e = Assert.Throws<Qcow2FormatException>(() =>
            h.CheckIncompatibleFeatures(IncompatibleFeatures.KnownToQemu, FeatureNameTable.Qcow2ActorsDefault()));
        Assert.Contains("unsupported incompatible feature bit 63 (journal pending: run q2a recover)", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RequiredL1Size_rounds_up_to_whole_L2_tables()
    {
        Assert.Equal(0, Qcow2Header.RequiredL1Size(0, 16, false));
        Assert.Equal(1, Qcow2Header.RequiredL1Size(1, 16, false));
        Assert.Equal(1, Qcow2Header.RequiredL1Size(512L << 20, 16, false));
        Assert.Equal(2, Qcow2Header.RequiredL1Size((512L << 20) + 1, 16, false));
        Assert.Equal(2, Qcow2Header.RequiredL1Size(512L << 20, 16, true));
    }

    [Fact]
    public void CreateNew_refuses_options_the_format_cannot_express()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Qcow2Header.CreateNew(1, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => Qcow2Header.CreateNew(1, 13, extendedL2: true));
        Assert.Throws<ArgumentException>(() => Qcow2Header.CreateNew(1, 16, version: 2, refcountOrder: 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Qcow2Header.CreateNew(1L << 62, 9));
    }
}

public class Qcow2HeaderPeekTests
{
    private static byte[] Encoded(Qcow2Header h)
    {
        var b = new byte[4096];
        h.Write(b);
        return b;
    }

    [Fact]
    public void A_v3_header_shows_its_incompatible_bits_without_a_full_read()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.IncompatibleFeatures = IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending;
        Assert.True(Qcow2Header.TryPeekIncompatibleFeatures(Encoded(h), out var bits));
        Assert.Equal(IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending, bits);
    }

    [Fact]
    public void A_v2_header_a_foreign_file_and_a_short_read_show_nothing()
    {
        Assert.False(Qcow2Header.TryPeekIncompatibleFeatures(Encoded(Qcow2Header.CreateNew(1 << 20, version: 2)), out _));
        Assert.False(Qcow2Header.TryPeekIncompatibleFeatures(new byte[4096], out _));
        Assert.False(Qcow2Header.TryPeekIncompatibleFeatures(Encoded(Qcow2Header.CreateNew(1 << 20)).AsSpan(0, Qcow2Header.IncompatibleFeaturesOffset + 7), out _));
    }
}
