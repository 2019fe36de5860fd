using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Engine.Tests.Create;

/// <summary>qemu-img measure's arithmetic, checked against figures QEMU's own tests print (iotests 178 and 190).</summary>
public sealed class ImageMeasureTests
{
    [Theory]
    [InlineData(1L << 30, 65536, 16, false, 1074135040L)]
    [InlineData(0L, 65536, 16, false, 196608L)]
    [InlineData(2L << 40, 65536, 16, false, 2199359062016L)]
    [InlineData(2L << 40, 2 << 20, 16, false, 2199042129920L)]
    public void Fully_allocated_size_matches_qemu_img(long size, int clusterSize, int refcountBits, bool extendedL2, long expected) =>
        Assert.Equal(expected, ImageMeasure.FullyAllocated(size, clusterSize, refcountBits, extendedL2));

    [Fact]
    public void Bitmaps_size_counts_every_bitmap_its_table_and_the_directory()
    {
        (string, long)[] bitmaps = [("b1", 512), ("b2", 2 << 20)];
        Assert.Equal(537198592L, ImageMeasure.BitmapsSize(bitmaps, 2L << 40, 65536));
        Assert.Equal(545259520L, ImageMeasure.BitmapsSize(bitmaps, 2L << 40, 2 << 20));
        Assert.Equal(0L, ImageMeasure.BitmapsSize([], 1L << 30, 65536));
    }

    [Fact]
    public void An_l1_table_above_32_MiB_is_too_large()
    {
        Assert.True(ImageMeasure.L1TooLarge(1L << 50, 1024, extendedL2: false));
        Assert.False(ImageMeasure.L1TooLarge(1L << 40, 65536, extendedL2: false));
    }
}
