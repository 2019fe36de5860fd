using CsCheck;
using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

public class BitmapTests
{
    private static BitmapDirectoryEntry Sample(string name = "b0") => new()
    {
        TableOffset = 0x60000, TableSize = 1, Flags = BitmapFlags.Auto, Type = 1, GranularityBits = 16, Name = name,
    };

    private static byte[] Encode(IReadOnlyList<BitmapDirectoryEntry> entries)
    {
        var b = new byte[BitmapDirectory.ComputeSize(entries)];
        Assert.Equal(b.Length, BitmapDirectory.Write(entries, b));
        return b;
    }

    [Fact]
    public void Directory_entry_fields_sit_at_the_documented_offsets()
    {
        var b = Encode([Sample()]);
        Assert.Equal(Hex("0000000000060000 00000001 00000002 01 10 0002 00000000 6230 000000000000"), b);
    }

    [Fact]
    public void Directory_round_trips_with_extra_data_and_padding()
    {
        var gen = Gen.Select(Gen.Long[1, 1L << 40], Gen.Int[1, 1000], Gen.UInt[0, 7], Gen.Byte[9, 31], Gen.Byte.Array[0, 20])
            .Select((off, size, flags, gran, extra) => new BitmapDirectoryEntry
            {
                TableOffset = off << 16, TableSize = size, Flags = (BitmapFlags)flags, GranularityBits = gran, ExtraData = extra,
            }).Array[1, 6];
        gen.Sample(entries =>
        {
            for (int i = 0; i < entries.Length; i++) entries[i].Name = "bitmap-" + i + new string('x', i * 3);
            var b = Encode(entries);
            Assert.Equal(0, b.Length % 8);
            var r = BitmapDirectory.Read(b, entries.Length, 0x70000);
            Assert.Equal(b, Encode(r));
            Assert.Equal(entries.Select(e => e.Name), r.Select(e => e.Name));
        });
    }

    [Fact]
    public void Extra_data_makes_a_bitmap_unusable_unless_flagged_compatible()
    {
        var e = Sample();
        Assert.True(e.IsUsable);
        e.ExtraData = [1, 2];
        Assert.False(e.IsUsable);
        e.Flags |= BitmapFlags.ExtraDataCompatible;
        Assert.True(e.IsUsable);
    }

    [Fact]
    public void Read_refuses_reserved_flags()
    {
        var b = Encode([Sample()]);
        b[BitmapDirectoryEntry.FlagsOffset + 3] |= 8;
        var e = Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read(b, 1, 0x70000));
        Assert.Equal("bitmap flags", e.Field);
        Assert.Equal(0x70000 + 12, e.Offset);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1024)]
    public void Read_refuses_name_sizes_outside_1_to_1023(int size)
    {
        var b = new byte[2048];
        Encode([Sample()]).CopyTo(b, 0);
        U16(b, BitmapDirectoryEntry.NameSizeOffset, (ushort)size);
        Assert.Equal("bitmap name_size", Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read(b, 1)).Field);
    }

    [Fact]
    public void Read_refuses_extra_data_past_the_directory()
    {
        var b = Encode([Sample()]);
        U32(b, BitmapDirectoryEntry.ExtraDataSizeOffset, 100);
        Assert.Equal("bitmap extra_data_size", Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read(b, 1)).Field);
    }

    [Fact]
    public void Read_refuses_a_directory_size_that_does_not_match_the_entries()
    {
        var b = Encode([Sample()]);
        Assert.Equal("bitmap_directory_size", Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read(b.Concat(new byte[8]).ToArray(), 1)).Field);
        Assert.Equal("bitmap directory", Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read(b, 2)).Field);
        Assert.Equal("bitmap directory", Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read(b.AsSpan(..^1), 1)).Field);
    }

    [Fact]
    public void Read_refuses_duplicate_names() =>
        Assert.Equal("bitmap name", Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read(Encode([Sample("x"), Sample("x")]), 2)).Field);

    [Fact]
    public void Read_refuses_a_count_outside_1_to_65535() =>
        Assert.Equal("nb_bitmaps", Assert.Throws<Qcow2FormatException>(() => BitmapDirectory.Read([], 0)).Field);

    [Fact]
    public void Validate_reports_what_QEMU_rejects()
    {
        Assert.Null(Sample().Validate(16));
        var t = Sample(); t.Type = 2; Assert.NotNull(t.Validate(16));
        var g = Sample(); g.GranularityBits = 8; Assert.NotNull(g.Validate(16));
        var z = Sample(); z.TableSize = 0; Assert.NotNull(z.Validate(16));
        var a = Sample(); a.TableOffset = 0x60200; Assert.NotNull(a.Validate(16));
    }

    [Fact]
    public void Table_entries_distinguish_data_all_zeros_and_all_ones()
    {
        Assert.True(BitmapTableEntry.AllZeros.IsAllZeros);
        Assert.True(BitmapTableEntry.AllOnes.IsAllOnes);
        var d = BitmapTableEntry.Data(0x80000);
        Assert.Equal(0x80000, d.DataOffset);
        Assert.False(d.IsAllOnes || d.IsAllZeros);
        Assert.Null(d.Validate(16));
        Assert.NotNull(new BitmapTableEntry(0x80001).Validate(16));
        Assert.NotNull(new BitmapTableEntry(0x80200).Validate(16));
        Assert.NotNull(new BitmapTableEntry(0x2).Validate(16));
        Assert.NotNull(new BitmapTableEntry(0x0100000000000000).Validate(16));
        var table = new byte[16];
        d.Write(table, 1);
        Assert.Equal(d, BitmapTableEntry.Read(table, 1));
    }

    [Fact]
    public void Bitmap_bits_0_and_9_are_bytes_01_02()
    {
        var data = new byte[2];
        BitmapData.Set(data, BitmapData.BitIndex(0, 16), true);
        BitmapData.Set(data, BitmapData.BitIndex(9L << 16, 16), true);
        Assert.Equal(Hex("0102"), data);
        Assert.True(BitmapData.Get(data, 9));
        BitmapData.Set(data, 9, false);
        Assert.False(BitmapData.Get(data, 9));
    }
}
