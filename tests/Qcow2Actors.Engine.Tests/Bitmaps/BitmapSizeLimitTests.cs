using Qcow2Actors.Engine.Bitmaps;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Tests.Bitmaps;

/// <summary>
/// QEMU's cap on a bitmap's data (512 MiB): a bitmap past it is neither added nor read, so a huge
/// disk at a fine granularity never asks for gigabytes of memory.
/// </summary>
public sealed class BitmapSizeLimitTests : HostedImageTests
{
    private const long TiB = 1L << 40;

    [Fact]
    public async Task Adding_a_bitmap_whose_data_passes_the_limit_is_refused_in_qemu_imgs_words()
    {
        var path = Dir.File("huge.qcow2");
        await (await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 3 * TiB })).DisposeAsync();
        await using var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        // 3 TiB at 512 bytes a bit is 768 MiB of bits.
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(async () => await image.AddBitmapAsync("b", 512));
        Assert.Equal("Can't make bitmap 'b' persistent: Too much space will be occupied by the bitmap. Use larger granularity", refused.Message);
        Assert.Empty(image.Bitmaps);
        // 1 MiB granules are 384 KiB of bits: fine.
        await image.AddBitmapAsync("coarse", 1 << 20);
        Assert.Equal(["coarse"], image.Bitmaps.Select(b => b.Name));
    }

    [Fact]
    public async Task A_stored_bitmap_whose_data_passes_the_limit_is_refused_in_one_line_before_its_bits_are_allocated()
    {
        // A directory entry that matches a 3 TiB disk at 512-byte granules: 12288 clusters of 64 KiB (768 MiB).
        var entry = new BitmapDirectoryEntry { Name = "big", GranularityBits = 9, TableOffset = 65536, TableSize = 12288, Flags = BitmapFlags.Auto };
        var problem = BitmapReader.Problem(entry, 3 * TiB, 16);
        Assert.NotNull(problem);
        Assert.Contains("'big'", problem, StringComparison.Ordinal);

        using var device = new MemoryBlockDevice(new byte[4 << 20]);
        var read = await Assert.ThrowsAsync<Qcow2ImageCorruptException>(async () => await BitmapReader.ReadBitsAsync(device, entry, 3 * TiB, 65536, default));
        Assert.DoesNotContain('\n', read.Message);
        Assert.Contains("limit", read.Message, StringComparison.Ordinal);
    }
}
