using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

public sealed class CopyOnWriteBlockDeviceTests
{
    private static byte[] Pattern(int length) => Enumerable.Range(0, length).Select(i => (byte)(i * 7 + 1)).ToArray();

    private static byte[] ReadAll(IBlockDevice device)
    {
        var bytes = new byte[device.Length];
        Assert.Equal(bytes.Length, device.Read(bytes, 0));
        return bytes;
    }

    [Fact]
    public void Reads_fall_through_and_writes_stay_in_memory_leaving_the_device_below_untouched()
    {
        var original = Pattern(20_000);
        var below = new MemoryBlockDevice(original);
        using var cow = new CopyOnWriteBlockDevice(below);
        var model = original.ToArray();

        cow.Write([0xAA, 0xBB, 0xCC], 4094); // straddles two pages
        model[4094] = 0xAA; model[4095] = 0xBB; model[4096] = 0xCC;
        cow.Write(new byte[8192], 8192); // two whole pages
        Array.Clear(model, 8192, 8192);

        Assert.Equal(model, ReadAll(cow));
        Assert.Equal(original, below.ToArray());
        var middle = new byte[10];
        Assert.Equal(10, cow.Read(middle, 4090));
        Assert.Equal(model.AsSpan(4090, 10).ToArray(), middle);
    }

    [Fact]
    public void Writes_past_the_end_grow_it_with_zeros_between()
    {
        var below = new MemoryBlockDevice(Pattern(100));
        using var cow = new CopyOnWriteBlockDevice(below);
        cow.Write([9], 10_000);
        Assert.Equal(10_001, cow.Length);
        var all = ReadAll(cow);
        Assert.Equal(Pattern(100), all[..100]);
        Assert.All(all[100..10_000], b => Assert.Equal(0, b));
        Assert.Equal(9, all[10_000]);
        Assert.Equal(100, below.Length);
    }

    [Fact]
    public void Shrinking_then_growing_reads_zeros_where_data_was_cut_on_either_layer()
    {
        var below = new MemoryBlockDevice(Pattern(12_000));
        using var cow = new CopyOnWriteBlockDevice(below);
        cow.Write([1, 1, 1, 1], 5000);
        cow.SetLength(4999);
        cow.SetLength(12_000);
        var all = ReadAll(cow);
        Assert.Equal(Pattern(4999), all[..4999]);
        Assert.All(all[4999..], b => Assert.Equal(0, b));
        Assert.Equal(Pattern(12_000), below.ToArray());
    }

    [Fact]
    public void A_sealed_overlay_refuses_writes_truncation_and_flush_but_still_reads()
    {
        using var cow = new CopyOnWriteBlockDevice(new MemoryBlockDevice(Pattern(10)));
        cow.Write([5], 0);
        cow.Seal();
        Assert.True(cow.IsReadOnly);
        Assert.Throws<IOException>(() => cow.Write([2], 0));
        Assert.Throws<IOException>(() => cow.SetLength(0));
        Assert.Throws<IOException>(() => cow.Flush());
        Assert.Equal(5, ReadAll(cow)[0]);
    }

    [Fact]
    public void Reads_past_the_end_are_short_as_on_a_file()
    {
        using var cow = new CopyOnWriteBlockDevice(new MemoryBlockDevice(Pattern(10)));
        var buffer = new byte[8];
        Assert.Equal(2, cow.Read(buffer, 8));
        Assert.Equal(0, cow.Read(buffer, 10));
    }
}
