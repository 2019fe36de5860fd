using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

public class MemoryBlockDeviceTests
{
    [Fact]
    public void Write_then_read_returns_the_bytes_and_extends_the_length()
    {
        using var dev = new MemoryBlockDevice();
        dev.Write([1, 2, 3], 10);
        Assert.Equal(13, dev.Length);
        var buf = new byte[13];
        Assert.Equal(13, dev.Read(buf, 0));
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3 }, buf);
    }

    [Fact]
    public async Task Read_past_the_end_is_short_and_read_at_the_end_returns_zero()
    {
        using var dev = new MemoryBlockDevice([9, 8, 7, 6]);
        var buf = new byte[8];
        Assert.Equal(2, dev.Read(buf, 2));
        Assert.Equal(0, await dev.ReadAsync(buf, 4));
    }

    [Fact]
    public void Shrinking_then_growing_reads_zeros_where_data_was_cut()
    {
        using var dev = new MemoryBlockDevice([1, 1, 1, 1]);
        dev.SetLength(1);
        dev.SetLength(4);
        Assert.Equal(new byte[] { 1, 0, 0, 0 }, dev.ToArray());
    }

    [Fact]
    public void Read_only_device_refuses_writes_and_truncation()
    {
        using var dev = new MemoryBlockDevice([1], readOnly: true);
        Assert.Throws<IOException>(() => dev.Write([2], 0));
        Assert.Throws<IOException>(() => dev.SetLength(0));
    }

    [Fact]
    public void Flush_is_counted()
    {
        using var dev = new MemoryBlockDevice();
        dev.Flush();
        dev.Flush();
        Assert.Equal(2, dev.FlushCount);
    }
}
