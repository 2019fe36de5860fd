using CsCheck;
using static Qcow2Actors.Format.Tests.Bytes;

namespace Qcow2Actors.Format.Tests;

public class RefcountTests
{
    [Theory]
    [InlineData(0, 524288, 1, 475715)]
    [InlineData(2, 131072, 7, 82499)]
    [InlineData(4, 32768, 30, 16963)]
    [InlineData(6, 8192, 122, 579)]
    public void Cluster_1000003_with_64_KiB_clusters_maps_to_the_documented_table_and_block_index(int order, long perBlock, long tableIndex, long blockIndex)
    {
        const long cluster = 1_000_003;
        Assert.Equal(perBlock, RefcountBlock.EntriesPerBlock(16, order));
        Assert.Equal(tableIndex, cluster / perBlock);
        Assert.Equal(blockIndex, cluster % perBlock);
    }

    [Fact]
    public void One_bit_refcount_475715_is_byte_59464_bit_3()
    {
        var block = new byte[65536];
        RefcountBlock.Set(block, 475715, 0, 1);
        Assert.Equal(0x08, block[59464]);
        Assert.Equal(1, block.Count(b => b != 0));
    }

    [Fact]
    public void Four_bit_refcount_82499_is_the_high_nibble_of_byte_41249()
    {
        var block = new byte[65536];
        RefcountBlock.Set(block, 82499, 2, 0xA);
        Assert.Equal(0xA0, block[41249]);
        RefcountBlock.Set(block, 82498, 2, 0x3);
        Assert.Equal(0xA3, block[41249]);
        Assert.Equal(0xAUL, RefcountBlock.Get(block, 82499, 2));
    }

    [Fact]
    public void Sixteen_bit_refcount_16963_is_big_endian_at_bytes_33926_33927()
    {
        var block = new byte[65536];
        RefcountBlock.Set(block, 16963, 4, 0x1234);
        Assert.Equal(Hex("1234"), block[33926..33928]);
    }

    [Fact]
    public void Sixty_four_bit_refcount_579_is_big_endian_at_bytes_4632_4639()
    {
        var block = new byte[65536];
        RefcountBlock.Set(block, 579, 6, 0x0102030405060708);
        Assert.Equal(Hex("0102030405060708"), block[4632..4640]);
    }

    [Theory]
    [InlineData(0, "7F")]
    [InlineData(1, "5515")]
    [InlineData(2, "11111101")]
    [InlineData(3, "01010101010101")]
    [InlineData(4, "0001000100010001000100010001")]
    [InlineData(5, "00000001000000010000000100000001000000010000000100000001")]
    [InlineData(6, "0000000000000001000000000000000100000000000000010000000000000001000000000000000100000000000000010000000000000001")]
    public void Seven_clusters_at_refcount_1_give_the_verified_first_block_bytes(int order, string hex)
    {
        var block = new byte[512];
        for (int i = 0; i < 7; i++) RefcountBlock.Set(block, i, order, 1);
        var expected = Hex(hex);
        Assert.Equal(expected, block[..expected.Length]);
        Assert.All(block[expected.Length..], b => Assert.Equal(0, b));
    }

    [Theory]
    [InlineData(0, 1UL)]
    [InlineData(1, 3UL)]
    [InlineData(2, 15UL)]
    [InlineData(3, 255UL)]
    [InlineData(4, 65535UL)]
    [InlineData(5, 4294967295UL)]
    [InlineData(6, ulong.MaxValue)]
    public void MaxValue_is_two_to_the_width_minus_one_and_Set_refuses_more(int order, ulong max)
    {
        Assert.Equal(max, RefcountBlock.MaxValue(order));
        var block = new byte[64];
        RefcountBlock.Set(block, 3, order, max);
        Assert.Equal(max, RefcountBlock.Get(block, 3, order));
        if (max != ulong.MaxValue)
            Assert.Throws<ArgumentOutOfRangeException>(() => RefcountBlock.Set(block, 3, order, max + 1));
    }

    [Fact]
    public void Orders_outside_0_to_6_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => RefcountBlock.MaxValue(7));
        Assert.Throws<ArgumentOutOfRangeException>(() => RefcountBlock.Get(new byte[8], 0, -1));
    }

    [Fact]
    public void Set_changes_only_its_own_entry_at_every_width()
    {
        var gen = Gen.Select(Gen.Int[0, 6], Gen.Int[0, 1023], Gen.ULong, Gen.Byte.Array[1024]);
        gen.Sample((order, index, raw, initial) =>
        {
            long entries = initial.Length * 8L >> order;
            long i = index % entries;
            ulong value = raw & RefcountBlock.MaxValue(order);
            var block = (byte[])initial.Clone();
            RefcountBlock.Set(block, i, order, value);
            Assert.Equal(value, RefcountBlock.Get(block, i, order));
            for (long j = 0; j < entries; j++)
                if (j != i) Assert.Equal(RefcountBlock.Get(initial, j, order), RefcountBlock.Get(block, j, order));
        }, iter: 300);
    }

    [Fact]
    public void RefcountTableEntry_masks_offset_and_reserved_bits()
    {
        var e = new RefcountTableEntry(0x0000000000020000 | 0x1);
        Assert.Equal(0x20000, e.BlockOffset);
        Assert.Equal(1UL, e.ReservedBits);
        Assert.NotNull(e.Validate(16));
        Assert.Null(RefcountTableEntry.Create(0x20000).Validate(16));
        Assert.NotNull(RefcountTableEntry.Create(0x20200).Validate(16));
        Assert.NotNull(new RefcountTableEntry(0x8000000000000000).Validate(16));
        Assert.True(new RefcountTableEntry(0).IsUnallocated);
        Assert.Throws<ArgumentOutOfRangeException>(() => RefcountTableEntry.Create(0x20001));
    }

    [Fact]
    public void RefcountTableEntry_round_trips_through_a_table()
    {
        Gen.Long[0, (1L << 54) - 1].Sample(c =>
        {
            var table = new byte[24];
            var e = RefcountTableEntry.Create(c << 9);
            e.Write(table, 2);
            Assert.Equal(e, RefcountTableEntry.Read(table, 2));
            Assert.Equal(c << 9, RefcountTableEntry.Read(table, 2).BlockOffset);
        });
    }
}
