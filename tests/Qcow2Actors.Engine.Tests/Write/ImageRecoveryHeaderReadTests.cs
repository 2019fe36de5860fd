using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Tests.Write;

public sealed class ImageRecoveryHeaderReadTests
{
    /// <summary>An in-memory image that counts the bytes read from it.</summary>
    private sealed class CountingDevice(byte[] data) : BlockDevice
    {
        public long BytesRead { get; private set; }
        public override long Length => data.Length;
        public override bool IsReadOnly => true;
        public override string Name => "memory";

        protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            var n = (int)Math.Clamp(data.Length - offset, 0, buffer.Length);
            if (n > 0) data.AsSpan((int)offset, n).CopyTo(buffer.Span);
            BytesRead += n;
            return new(n);
        }

        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken) =>
            throw new IOException("read-only");

        protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public override void SetLength(long length) => throw new IOException("read-only");
    }

    private static byte[] TwoMegabyteClusterImage(Action<ImageHeaderBlock> change)
    {
        var h = Qcow2Header.CreateNew(64 << 20, clusterBits: 21);
        h.L1TableOffset = 0x600000;
        h.RefcountTableOffset = 0x200000;
        var block = new ImageHeaderBlock(h) { FeatureNames = FeatureNameTable.QemuDefault(), BackingFormat = "raw", BackingFileName = "base.raw" };
        change(block);
        var image = new byte[4 << 20];
        block.Write(image);
        return image;
    }

    [Fact]
    public void The_header_of_a_two_megabyte_cluster_image_is_read_from_its_first_four_kilobytes()
    {
        var device = new CountingDevice(TwoMegabyteClusterImage(_ => { }));

        var block = ImageRecovery.ReadHeader(device);

        Assert.Equal("base.raw", block.BackingFileName);
        Assert.Equal("raw", block.BackingFormat);
        Assert.Equal(4096, device.BytesRead);
    }

    [Fact]
    public void A_header_whose_extensions_reach_past_four_kilobytes_is_read_with_its_whole_cluster()
    {
        var device = new CountingDevice(TwoMegabyteClusterImage(b => b.UnknownExtensions.Add(new HeaderExtension(0x12345678, new byte[6000]))));

        var block = ImageRecovery.ReadHeader(device);

        Assert.Equal(6000, block.UnknownExtensions.Single().Data.Length);
        Assert.Equal("base.raw", block.BackingFileName);
        Assert.Equal(4096 + (2 << 20), device.BytesRead);
    }
}
