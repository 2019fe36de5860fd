using System.Buffers.Binary;
using System.Text;
using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

public class ImageHeaderBlockTests
{
    private static ImageHeaderBlock Overlay()
    {
        var h = Qcow2Header.CreateNew(64 << 20);
        h.L1TableOffset = 0x30000;
        h.RefcountTableOffset = 0x10000;
        return new ImageHeaderBlock(h)
        {
            BackingFormat = "qcow2",
            FeatureNames = FeatureNameTable.QemuDefault(),
            BackingFileName = "base.qcow2",
        };
    }

    private static byte[] Cluster0(ImageHeaderBlock block)
    {
        var c = new byte[block.Header.ClusterSize];
        block.Write(c);
        return c;
    }

    private static uint TypeAt(byte[] c, int at) => BinaryPrimitives.ReadUInt32BigEndian(c.AsSpan(at));

    [Fact]
    public void Write_lays_out_a_qemu_overlay_like_qemu_img()
    {
        var block = Overlay();
        var c = Cluster0(block);
        Assert.Equal(HeaderExtensionType.BackingFormat, TypeAt(c, 0x70));
        Assert.Equal(5u, TypeAt(c, 0x74));
        Assert.Equal("qcow2", Encoding.ASCII.GetString(c, 0x78, 5));
        Assert.Equal(HeaderExtensionType.FeatureNameTable, TypeAt(c, 0x80));
        Assert.Equal(384u, TypeAt(c, 0x84));
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64BigEndian(c.AsSpan(0x208)));
        Assert.Equal("base.qcow2", Encoding.ASCII.GetString(c, 0x210, 10));
        Assert.Equal(0x210, block.Header.BackingFileOffset);
        Assert.Equal(10, block.Header.BackingFileSize);
        Assert.Equal(0x210UL, BinaryPrimitives.ReadUInt64BigEndian(c.AsSpan(Qcow2Header.BackingFileOffsetOffset)));
        Assert.Equal(0x21A, block.EncodedLength);
        Assert.All(c.AsSpan(0x21A).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void Read_decodes_the_overlay_and_Write_reproduces_it()
    {
        var c = Cluster0(Overlay());
        var r = ImageHeaderBlock.Read(c);
        Assert.Equal("qcow2", r.BackingFormat);
        Assert.Equal("base.qcow2", r.BackingFileName);
        Assert.Equal(8, r.FeatureNames!.Entries.Count);
        Assert.Equal("lazy refcounts", r.FeatureNames.Lookup(FeatureType.Compatible, 0));
        Assert.Equal([HeaderExtensionType.BackingFormat, HeaderExtensionType.FeatureNameTable], r.FileOrder);
        Assert.Equal(c, Cluster0(r));
    }

    [Fact]
    public void All_extension_types_round_trip_in_qemu_order()
    {
        var h = Qcow2Header.CreateNew(1L << 30);
        h.CryptMethod = CryptMethod.Luks;
        h.IncompatibleFeatures |= IncompatibleFeatures.ExternalDataFile;
        h.AutoclearFeatures = AutoclearFeatures.Bitmaps | AutoclearFeatures.RawExternalData;
        var block = new ImageHeaderBlock(h)
        {
            BackingFormat = "raw",
            DataFile = "data.raw",
            Fde = new FdeExtension(0x50000, 2 << 20),
            FeatureNames = FeatureNameTable.Qcow2ActorsDefault(),
            Bitmaps = new BitmapsExtension(2, 64, 0x70000),
        };
        block.UnknownExtensions.Add(new HeaderExtension(0x12345678, [1, 2, 3]));
        block.UnknownExtensions.Add(new HeaderExtension(0x0BADF00D, []));
        var c = Cluster0(block);
        var r = ImageHeaderBlock.Read(c);
        Assert.Equal("raw", r.BackingFormat);
        Assert.Equal("data.raw", r.DataFile);
        Assert.Equal(block.Fde, r.Fde);
        Assert.Equal(block.Bitmaps, r.Bitmaps);
        Assert.Equal(block.FeatureNames.Entries, r.FeatureNames!.Entries);
        Assert.Equal(block.UnknownExtensions.Select(e => (e.Type, Convert.ToHexString(e.Data))),
            r.UnknownExtensions.Select(e => (e.Type, Convert.ToHexString(e.Data))));
        Assert.Equal([HeaderExtensionType.BackingFormat, HeaderExtensionType.ExternalDataFile, HeaderExtensionType.FullDiskEncryption,
            HeaderExtensionType.FeatureNameTable, HeaderExtensionType.Bitmaps, 0x12345678u, 0x0BADF00Du], r.FileOrder);
        Assert.Null(r.BackingFileName);
        Assert.Equal(c, Cluster0(r));
    }

    [Fact]
    public void UsedLength_covers_header_extensions_and_backing_name_and_Read_of_that_prefix_decodes_the_same()
    {
        var c = Cluster0(Overlay());
        Assert.Equal(0x21A, ImageHeaderBlock.UsedLength(c.AsSpan(0, 4096)));
        var whole = ImageHeaderBlock.Read(c);
        var prefix = ImageHeaderBlock.Read(c.AsSpan(0, 0x21A));
        Assert.Equal(Cluster0(whole), Cluster0(prefix));
        Assert.Equal(whole.FileOrder, prefix.FileOrder);
    }

    [Fact]
    public void UsedLength_is_unknown_when_an_extension_reaches_past_the_prefix()
    {
        var h = Qcow2Header.CreateNew(64 << 20, clusterBits: 21);
        h.L1TableOffset = 0x600000;
        h.RefcountTableOffset = 0x200000;
        var block = new ImageHeaderBlock(h) { FeatureNames = FeatureNameTable.QemuDefault() };
        block.UnknownExtensions.Add(new HeaderExtension(0x12345678, new byte[8000]));
        var c = Cluster0(block);
        Assert.Equal(-1, ImageHeaderBlock.UsedLength(c.AsSpan(0, 4096)));
        var used = ImageHeaderBlock.UsedLength(c.AsSpan(0, 16384));
        Assert.Equal(block.EncodedLength, used);
        // A prefix cut before the end marker would read as "no more extensions": Read pads it and sees the same.
        Assert.Equal(8000, ImageHeaderBlock.Read(c.AsSpan(0, used)).UnknownExtensions.Single().Data.Length);
    }

    [Fact]
    public void UsedLength_leaves_a_header_Read_may_refuse_to_a_whole_cluster_read()
    {
        var c = Cluster0(Overlay());
        BinaryPrimitives.WriteUInt32BigEndian(c.AsSpan(Qcow2Header.ClusterBitsOffset), 40);
        Assert.Equal(-1, ImageHeaderBlock.UsedLength(c.AsSpan(0, 4096)));
        Assert.Equal(-1, ImageHeaderBlock.UsedLength(c.AsSpan(0, 64)));
    }

    [Fact]
    public void Read_accepts_a_file_shorter_than_a_cluster()
    {
        var c = Cluster0(Overlay());
        var r = ImageHeaderBlock.Read(c.AsSpan(0, 0x21A));
        Assert.Equal("base.qcow2", r.BackingFileName);
    }

    [Fact]
    public void Read_keeps_extensions_of_a_v2_image_and_Write_omits_the_feature_table()
    {
        var block = new ImageHeaderBlock(Qcow2Header.CreateNew(1 << 20, version: 2))
        {
            BackingFormat = "qcow2",
            FeatureNames = FeatureNameTable.QemuDefault(),
            BackingFileName = "b",
        };
        var c = Cluster0(block);
        Assert.Equal(HeaderExtensionType.BackingFormat, TypeAt(c, 72));
        Assert.Equal(0u, TypeAt(c, 88));
        Assert.Equal(96, block.Header.BackingFileOffset);
        var r = ImageHeaderBlock.Read(c);
        Assert.Null(r.FeatureNames);
        Assert.Equal("b", r.BackingFileName);
    }

    [Fact]
    public void Read_stops_at_the_backing_file_name_without_an_end_marker()
    {
        var h = Qcow2Header.CreateNew(1 << 20, 9);
        var c = new byte[512];
        h.BackingFileOffset = 128;
        h.BackingFileSize = 4;
        h.Write(c);
        U32(c, 112, 0x11111111);
        U32(c, 116, 8); // exactly fills 112..128
        Encoding.ASCII.GetBytes("base").CopyTo(c, 128);
        var r = ImageHeaderBlock.Read(c);
        Assert.Single(r.UnknownExtensions);
        Assert.Equal("base", r.BackingFileName);
    }

    [Fact]
    public void Read_refuses_an_extension_that_overruns_the_area()
    {
        var c = Cluster0(Overlay());
        U32(c, 0x74, 0x1A0); // would reach past the name at 0x210
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c));
        Assert.Equal("header extension length", e.Field);
        Assert.Equal(0x74, e.Offset);
    }

    [Fact]
    public void Read_refuses_an_extension_header_cut_by_the_area_end()
    {
        var h = Qcow2Header.CreateNew(1 << 20, 9);
        h.BackingFileOffset = 116;
        h.BackingFileSize = 1;
        var c = new byte[512];
        h.Write(c);
        U32(c, 112, 0x11111111);
        c[116] = (byte)'x';
        Assert.Equal("header extension", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_an_extension_running_past_the_cluster()
    {
        var h = Qcow2Header.CreateNew(1 << 20, 9);
        var c = new byte[512];
        h.Write(c);
        U32(c, 112, 0x11111111);
        U32(c, 116, 512 - 120 + 1);
        Assert.Equal("header extension length", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_a_repeated_extension_type()
    {
        var block = Overlay();
        block.UnknownExtensions.Add(new HeaderExtension(0x77777777, [1]));
        block.UnknownExtensions.Add(new HeaderExtension(0x77777777, [2]));
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(Cluster0(block)));
        Assert.Equal("header extension type", e.Field);
    }

    [Fact]
    public void Read_refuses_a_repeated_backing_format()
    {
        var c = Cluster0(Overlay());
        // Replace the feature table with a second backing format extension.
        U32(c, 0x80, HeaderExtensionType.BackingFormat);
        U32(c, 0x84, 3);
        Encoding.ASCII.GetBytes("raw").CopyTo(c, 0x88);
        U32(c, 0x90, 0);
        U32(c, 0x94, 0);
        Assert.Equal("header extension type", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_a_backing_format_longer_than_15_bytes()
    {
        var c = Cluster0(new ImageHeaderBlock(Qcow2Header.CreateNew(1 << 20)));
        U32(c, 112, HeaderExtensionType.BackingFormat);
        U32(c, 116, 16);
        Encoding.ASCII.GetBytes("abcdefghijklmnop").CopyTo(c, 120);
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c));
        Assert.Equal("backing format", e.Field);
        Assert.Equal(120, e.Offset);
    }

    [Fact]
    public void Read_refuses_a_NUL_inside_the_backing_file_name()
    {
        var c = Cluster0(Overlay());
        c[0x213] = 0;
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c));
        Assert.Equal("backing file name", e.Field);
        Assert.Equal(0x213, e.Offset);
    }

    [Fact]
    public void Read_refuses_a_backing_file_name_that_is_not_UTF8()
    {
        var c = Cluster0(Overlay());
        c[0x211] = 0xFF;
        Assert.Equal("backing file name", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_a_data_file_name_with_a_NUL()
    {
        var block = new ImageHeaderBlock(Qcow2Header.CreateNew(1 << 20)) { DataFile = "abc" };
        var c = Cluster0(block);
        c[121] = 0;
        Assert.Equal("data file name", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_LUKS_without_an_FDE_extension()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.CryptMethod = CryptMethod.Luks;
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(Cluster0(new ImageHeaderBlock(h))));
        Assert.Equal("crypt_method", e.Field);
        Assert.Equal(32, e.Offset);
    }

    [Fact]
    public void Read_refuses_an_FDE_extension_without_LUKS()
    {
        var block = new ImageHeaderBlock(Qcow2Header.CreateNew(1 << 20)) { Fde = new FdeExtension(0x10000, 4096) };
        Assert.Equal("header extension type", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(Cluster0(block))).Field);
    }

    [Fact]
    public void Read_refuses_an_FDE_extension_with_an_unaligned_offset()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.CryptMethod = CryptMethod.Luks;
        var block = new ImageHeaderBlock(h) { Fde = new FdeExtension(0x10200, 4096) };
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(Cluster0(block)));
        Assert.Equal("FDE offset", e.Field);
        Assert.Equal(120, e.Offset);
    }

    [Fact]
    public void Read_refuses_an_FDE_extension_of_the_wrong_length()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.CryptMethod = CryptMethod.Luks;
        var block = new ImageHeaderBlock(h);
        var c = Cluster0(block);
        U32(c, 112, HeaderExtensionType.FullDiskEncryption);
        U32(c, 116, 8);
        Assert.Equal("FDE extension length", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_the_bitmaps_bit_without_the_extension()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.AutoclearFeatures = AutoclearFeatures.Bitmaps;
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(Cluster0(new ImageHeaderBlock(h))));
        Assert.Equal("autoclear_features", e.Field);
    }

    [Fact]
    public void Read_drops_a_stale_bitmaps_extension_without_checking_its_contents()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        var c = Cluster0(new ImageHeaderBlock(h));
        U32(c, 112, HeaderExtensionType.Bitmaps);
        U32(c, 116, BitmapsExtension.DataLength);
        U32(c, 124, 0xFFFFFFFF); // garbage contents (reserved field): ignored because autoclear bit 0 is clear
        var r = ImageHeaderBlock.Read(c);
        Assert.Null(r.Bitmaps);
        Assert.True(r.HadStaleBitmapsExtension);
        Assert.Empty(r.UnknownExtensions);
    }

    [Theory]
    [InlineData(ValidationProfile.Open)]
    [InlineData(ValidationProfile.Info)]
    [InlineData(ValidationProfile.Check)]
    public void Read_refuses_a_stale_bitmaps_extension_of_the_wrong_length_as_qemu_does(ValidationProfile profile)
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        var c = Cluster0(new ImageHeaderBlock(h));
        U32(c, 112, HeaderExtensionType.Bitmaps);
        U32(c, 116, 5); // QEMU judges the length before it looks at autoclear bit 0
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c, IncompatibleFeatures.KnownToQemu, profile));
        Assert.Equal(Qcow2Rule.BitmapsExtensionLength, e.Rule);
        Assert.Equal(116, e.Offset);
    }

    [Theory]
    [InlineData(0, 0u, 0UL, 0x10000UL, "nb_bitmaps")]
    [InlineData(65536, 0u, 4096UL, 0x10000UL, "nb_bitmaps")]
    [InlineData(1, 1u, 24UL, 0x10000UL, "bitmaps extension reserved")]
    [InlineData(1, 0u, (64UL << 20) + 1, 0x10000UL, "bitmap_directory_size")]
    [InlineData(2, 0u, 24UL, 0x10000UL, "bitmap_directory_size")]
    [InlineData(1, 0u, 24UL, 0x10200UL, "bitmap_directory_offset")]
    public void Read_refuses_a_bad_bitmaps_extension(int nb, uint reserved, ulong size, ulong offset, string field)
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.AutoclearFeatures = AutoclearFeatures.Bitmaps;
        var c = Cluster0(new ImageHeaderBlock(h) { Bitmaps = new BitmapsExtension(1, 24, 0x10000) });
        U32(c, 120, (uint)nb);
        U32(c, 124, reserved);
        U64(c, 128, size);
        U64(c, 136, offset);
        Assert.Equal(field, Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_a_bitmaps_extension_of_the_wrong_length()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.AutoclearFeatures = AutoclearFeatures.Bitmaps;
        var c = Cluster0(new ImageHeaderBlock(h) { Bitmaps = new BitmapsExtension(1, 24, 0x10000) });
        U32(c, 116, 16);
        Assert.Equal("bitmaps extension length", Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c)).Field);
    }

    [Fact]
    public void Read_refuses_unknown_incompatible_bits_naming_them_from_the_feature_table()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.IncompatibleFeatures = IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending;
        var c = Cluster0(new ImageHeaderBlock(h) { FeatureNames = FeatureNameTable.Qcow2ActorsDefault() });
        Assert.True(ImageHeaderBlock.Read(c).Header.IsJournalPending);
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(c, IncompatibleFeatures.KnownToQemu));
        Assert.Equal("incompatible_features", e.Field);
        Assert.Equal("invalid incompatible_features at offset 72 (0x48): unsupported incompatible feature bit 63 (journal pending: run q2a recover)", e.Message);
    }

    [Fact]
    public void Read_refuses_an_unnamed_unknown_incompatible_bit()
    {
        var h = Qcow2Header.CreateNew(1 << 20);
        h.IncompatibleFeatures = (IncompatibleFeatures)(1UL << 40);
        var e = Assert.Throws<Qcow2FormatException>(() => ImageHeaderBlock.Read(Cluster0(new ImageHeaderBlock(h))));
        Assert.EndsWith("unsupported incompatible feature bit 40", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Write_refuses_content_that_does_not_fit_in_cluster_0()
    {
        var block = new ImageHeaderBlock(Qcow2Header.CreateNew(1 << 20, 9))
        {
            FeatureNames = FeatureNameTable.QemuDefault(),
            BackingFileName = new string('a', 100),
        };
        Assert.Throws<InvalidOperationException>(() => block.Write(new byte[512]));
    }

    [Fact]
    public void Write_refuses_a_known_type_in_the_unknown_list()
    {
        var block = new ImageHeaderBlock(Qcow2Header.CreateNew(1 << 20));
        block.UnknownExtensions.Add(new HeaderExtension(HeaderExtensionType.BackingFormat, [1]));
        Assert.Throws<InvalidOperationException>(() => block.Write(new byte[65536]));
    }

    [Fact]
    public void Write_clears_the_backing_fields_when_the_name_is_removed()
    {
        var block = Overlay();
        Cluster0(block);
        block.BackingFileName = null;
        block.BackingFormat = null;
        var c = Cluster0(block);
        Assert.Equal(0, block.Header.BackingFileOffset);
        Assert.Null(ImageHeaderBlock.Read(c).BackingFileName);
    }
}
