using System.Buffers.Binary;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Tests.Check;

public sealed class ImageCheckerTests
{
    private sealed class MemoryDevice(byte[] data) : BlockDevice
    {
        public override long Length => data.Length;
        public override bool IsReadOnly => true;
        public override string Name => "memory";
        protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            var n = (int)Math.Clamp(data.Length - offset, 0, buffer.Length);
            data.AsSpan((int)offset, n).CopyTo(buffer.Span);
            return new(n);
        }
        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken) => throw new NotSupportedException();
        protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;
        public override void SetLength(long length) => throw new NotSupportedException();
    }

    private const int Cluster = HandBuiltImage.Cluster;

    /// <summary>A minimal v3 image: header, refcount table, refcount block, L1 (one entry), L2, one data cluster.</summary>
    private static byte[] SmallImage()
    {
        var img = HandBuiltImage.Create(6);
        BinaryPrimitives.WriteUInt64BigEndian(img.AsSpan(4 * Cluster), (1UL << 63) | (5 * Cluster));
        return img;
    }

    [Fact]
    public void A_consistent_image_has_no_findings_and_one_reference_per_used_cluster()
    {
        var result = ImageChecker.Check(new MemoryDevice(SmallImage()), "small");
        Assert.Equal(0, result.ExitCode);
        Assert.Empty(result.Messages);
        Assert.Equal(1, result.AllocatedClusters);
        Assert.Equal(16, result.TotalClusters);
        Assert.Equal(6 * Cluster, result.ImageEndOffset);
        Assert.All(Enumerable.Range(0, 6), c => Assert.Equal(1u, result.References![c]));
    }

    [Fact]
    public void A_data_cluster_referenced_twice_is_a_corruption_kept_as_a_mismatch_for_repair()
    {
        var img = SmallImage();
        BinaryPrimitives.WriteUInt64BigEndian(img.AsSpan(4 * Cluster + 8), (1UL << 63) | (5 * Cluster));
        var result = ImageChecker.Check(new MemoryDevice(img), "small");
        Assert.Equal(2, result.ExitCode);
        Assert.Equal(1, result.Corruptions);
        var mismatch = Assert.Single(result.Mismatches);
        Assert.Equal(new RefcountMismatch(5, 1, 2), mismatch);
        Assert.False(mismatch.IsLeak);
    }

    [Fact]
    public void Hostile_table_sizes_inside_qemu_limits_are_read_only_as_far_as_the_file_goes()
    {
        // A snapshot claiming a 32 MiB L1 far past the end of the file: counted as out of file, not allocated.
        var img = SmallImage();
        BinaryPrimitives.WriteUInt32BigEndian(img.AsSpan(36), 4 * 1024 * 1024);
        var result = ImageChecker.Check(new MemoryDevice(img), "small");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(result.Messages, m => m.Contains("exceeding the end of the file", StringComparison.Ordinal));
    }

    [Fact]
    public void A_header_no_opener_accepts_throws_a_format_exception_naming_the_field()
    {
        var img = SmallImage();
        BinaryPrimitives.WriteUInt32BigEndian(img.AsSpan(96), 7);
        var e = Assert.Throws<Qcow2FormatException>(() => ImageChecker.Check(new MemoryDevice(img), "small"));
        Assert.Equal("refcount_order", e.Field);
    }
}
