using CsCheck;
using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

public class FeatureNameTableTests
{
    [Fact]
    public void QemuDefault_holds_the_eight_names_qemu_img_writes()
    {
        var t = FeatureNameTable.QemuDefault();
        Assert.Equal(384, t.DataLength);
        Assert.Equal("dirty bit", t.Lookup(FeatureType.Incompatible, 0));
        Assert.Equal("extended L2 entries", t.Lookup(FeatureType.Incompatible, 4));
        Assert.Equal("raw external data", t.Lookup(FeatureType.Autoclear, 1));
        Assert.Null(t.Lookup(FeatureType.Incompatible, 63));
        Assert.Equal("journal pending: run q2a recover", FeatureNameTable.Qcow2ActorsDefault().Lookup(FeatureType.Incompatible, 63));
    }

    [Fact]
    public void The_journal_pending_name_tells_a_foreign_tool_what_to_run_and_fits_one_entry()
    {
        Assert.Contains("q2a recover", FeatureNameTable.JournalPendingName, StringComparison.Ordinal);
        Assert.InRange(System.Text.Encoding.UTF8.GetByteCount(FeatureNameTable.JournalPendingName), 1, FeatureNameTable.NameLength);
    }

    [Fact]
    public void Entries_are_48_bytes_type_bit_then_NUL_padded_name()
    {
        var b = new byte[48];
        new FeatureNameTable([new(FeatureType.Autoclear, 1, "ab")]).Write(b);
        Assert.Equal(Hex("02 01 6162") , b[..4]);
        Assert.All(b[4..], x => Assert.Equal(0, x));
    }

    [Fact]
    public void A_46_byte_name_has_no_NUL_and_round_trips()
    {
        string name = new('n', 46);
        var b = new byte[48];
        new FeatureNameTable([new(FeatureType.Compatible, 7, name)]).Write(b);
        Assert.Equal(name, FeatureNameTable.Read(b).Entries[0].Name);
        Assert.Throws<InvalidOperationException>(() => new FeatureNameTable([new(FeatureType.Compatible, 7, name + "x")]).Write(new byte[48]));
    }

    [Fact]
    public void Read_ignores_garbage_after_the_name_terminator()
    {
        var b = new byte[48];
        new FeatureNameTable([new(FeatureType.Incompatible, 3, "abc")]).Write(b);
        b[10] = 0xFF;
        Assert.Equal("abc", FeatureNameTable.Read(b).Entries[0].Name);
    }

    [Fact]
    public void Write_then_Read_round_trips_any_table()
    {
        var gen = Gen.Select(Gen.Int[0, 2], Gen.Int[0, 63], Gen.String[Gen.Char['a', 'z'], 1, 46])
            .Select((t, b, n) => new FeatureNameEntry((FeatureType)t, (byte)b, n)).List[0, 20];
        gen.Sample(list =>
        {
            var t = new FeatureNameTable(list);
            var b = new byte[t.DataLength];
            t.Write(b);
            Assert.Equal(list, FeatureNameTable.Read(b).Entries);
        });
    }

    [Fact]
    public void Read_refuses_a_length_that_is_not_a_multiple_of_48() =>
        Assert.Equal("feature name table length", Assert.Throws<Qcow2FormatException>(() => FeatureNameTable.Read(new byte[47], 120)).Field);

    [Fact]
    public void Read_refuses_an_unknown_feature_type()
    {
        var b = new byte[96];
        b[48] = 3;
        var e = Assert.Throws<Qcow2FormatException>(() => FeatureNameTable.Read(b, 0x88));
        Assert.Equal("feature name type", e.Field);
        Assert.Equal(0x88 + 48, e.Offset);
    }

    [Fact]
    public void Read_refuses_a_bit_number_above_63()
    {
        var b = new byte[48];
        b[1] = 64;
        Assert.Equal("feature name bit", Assert.Throws<Qcow2FormatException>(() => FeatureNameTable.Read(b)).Field);
    }

    [Fact]
    public void Read_refuses_a_name_that_is_not_UTF8()
    {
        var b = new byte[48];
        b[2] = 0xC3;
        Assert.Equal("feature name", Assert.Throws<Qcow2FormatException>(() => FeatureNameTable.Read(b)).Field);
    }
}
