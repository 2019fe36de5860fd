using System.Buffers.Binary;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Check;

public sealed class ImageRepairTests
{
    private const int Cluster = HandBuiltImage.Cluster;
    private const int Clusters = 8;
    private const ulong Copied = HandBuiltImage.Copied;

    /// <summary>An in-memory image file that records every write and flush, so a test can replay any prefix as a crash.</summary>
    private sealed class RecordingDevice(byte[] initial, bool readOnly = false) : BlockDevice
    {
        private byte[] _data = (byte[])initial.Clone();
        public List<(long Offset, byte[] Bytes)> Writes { get; } = [];
        public int Flushes { get; private set; }
        public byte[] Data => _data;
        public override long Length => _data.Length;
        public override bool IsReadOnly => readOnly;
        public override string Name => "memory";

        protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            var n = (int)Math.Clamp(_data.Length - offset, 0, buffer.Length);
            if (n > 0) _data.AsSpan((int)offset, n).CopyTo(buffer.Span);
            return new(n);
        }

        protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            if (readOnly) throw new IOException("read-only");
            Writes.Add((offset, buffer.ToArray()));
            Apply(ref _data, offset, buffer.Span);
            return ValueTask.CompletedTask;
        }

        protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
        {
            Flushes++;
            return ValueTask.CompletedTask;
        }

        public override void SetLength(long length) => Array.Resize(ref _data, (int)length);

        public static void Apply(ref byte[] data, long offset, ReadOnlySpan<byte> bytes)
        {
            if (offset + bytes.Length > data.Length) Array.Resize(ref data, (int)(offset + bytes.Length));
            bytes.CopyTo(data.AsSpan((int)offset));
        }
    }

    /// <summary>
    /// v3, 64 KiB clusters, 16-bit refcounts: header, refcount table, refcount block, L1, one L2
    /// mapping guest clusters 0-2 to host clusters 5-7 (filled with 0x11, 0x22, 0x33).
    /// </summary>
    private static byte[] Image()
    {
        var img = HandBuiltImage.Create(Clusters);
        var h = img.AsSpan();
        for (var g = 0; g < 3; g++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(h[(4 * Cluster + 8 * g)..], Copied | ((5UL + (ulong)g) * Cluster));
            h.Slice((5 + g) * Cluster, Cluster).Fill((byte)(0x11 * (g + 1)));
        }
        return img;
    }

    private static void SetRefcount(byte[] img, long cluster, ushort value) => HandBuiltImage.SetRefcount(img, cluster, value);

    private static void SetDirty(byte[] img) => img[79] |= 1;

    /// <summary>Guest clusters 0-2 as the image maps them now (through its own L1 and L2).</summary>
    private static byte[][] GuestData(byte[] img)
    {
        var l1 = (int)BinaryPrimitives.ReadUInt64BigEndian(img.AsSpan(40));
        var l2 = (int)(BinaryPrimitives.ReadUInt64BigEndian(img.AsSpan(l1)) & 0x00FFFFFFFFFFFE00UL);
        return [.. Enumerable.Range(0, 3).Select(g =>
        {
            var data = (int)(BinaryPrimitives.ReadUInt64BigEndian(img.AsSpan(l2 + 8 * g)) & 0x00FFFFFFFFFFFE00UL);
            return img.AsSpan(data, Cluster).ToArray();
        })];
    }

    private static HashSet<long> UnderCounted(CheckResult r) => [.. r.Mismatches.Where(m => m.Stored < m.References).Select(m => m.Cluster)];

    [Fact]
    public void A_repair_that_writes_nothing_reports_its_first_check_as_the_check_after()
    {
        var device = new RecordingDevice(Image());

        var result = ImageRepair.Repair(device, "img", RepairMode.All);

        Assert.Empty(device.Writes);
        Assert.Equal(0, result.ExitCode);
        // The bytes did not change, so neither would a second check: it is not run.
        Assert.Same(result.Before, result.After);
    }

    [Fact]
    public void A_repair_that_fixed_a_leak_checks_the_image_again()
    {
        var img = Image();
        SetRefcount(img, 5, 2);
        var device = new RecordingDevice(img);

        var result = ImageRepair.Repair(device, "img", RepairMode.All);

        Assert.NotEmpty(device.Writes);
        Assert.Equal(1, result.Before.Leaks);
        Assert.Equal(1, result.LeaksFixed);
        Assert.NotSame(result.Before, result.After);
        Assert.Equal(0, result.After.Leaks);
        Assert.Equal(0, result.ExitCode);
    }

    [Fact]
    public void RebuildRefcounts_makes_arbitrary_stored_refcounts_exact_and_clears_the_dirty_bit()
    {
        var img = Image();
        // What a lazy-refcounts image killed mid-write may hold: garbage where the refcounts were.
        var rng = new Random(7);
        rng.NextBytes(img.AsSpan(2 * Cluster, 64));
        SetDirty(img);
        var device = new RecordingDevice(img);

        var result = ImageRepair.RebuildRefcounts(device, "img");

        Assert.True(result.RefcountsRebuilt);
        Assert.Equal(0, result.After.ExitCode);
        Assert.Empty(result.After.Mismatches);
        Assert.True(result.MarkedClean);
        Assert.Equal(0, device.Data[79] & 1);
        Assert.Equal(GuestData(img), GuestData(device.Data));
    }

    [Fact]
    public void RebuildRefcounts_on_an_exact_dirty_image_only_clears_the_dirty_bit()
    {
        var img = Image();
        SetDirty(img);
        var device = new RecordingDevice(img);

        var result = ImageRepair.RebuildRefcounts(device, "img");

        Assert.False(result.RefcountsRebuilt);
        Assert.True(result.MarkedClean);
        // One write, inside the incompatible-features field (bytes 72-79): only the bytes that change.
        var write = Assert.Single(device.Writes);
        Assert.InRange(write.Offset, 72, 79);
        Assert.InRange(write.Offset + write.Bytes.Length, write.Offset + 1, 80);
    }

    [Fact]
    public void A_rebuild_writes_only_past_every_referenced_cluster_except_the_header_switch()
    {
        var img = Image();
        SetRefcount(img, 5, 0);
        var device = new RecordingDevice(img);

        var result = ImageRepair.Repair(device, "img", RepairMode.All);

        Assert.True(result.RefcountsRebuilt);
        Assert.Equal(0, result.After.ExitCode);
        Assert.Equal(1, result.CorruptionsFixed);
        // Frees of the old table and block go into the new blocks; so does every other write.
        foreach (var (offset, bytes) in device.Writes)
            Assert.True(offset >= Clusters * Cluster || (offset == 48 && bytes.Length == 12), $"write at {offset} ({bytes.Length} bytes)");
        var newTable = BinaryPrimitives.ReadUInt64BigEndian(device.Data.AsSpan(48));
        Assert.True(newTable >= Clusters * Cluster);
    }

    public static TheoryData<string> Damages() => new(["zeroed data refcount", "refcount block cleared", "garbage refcount block", "leak and raised refcount", "cleared copied flags", "two mappings of one cluster"]);

    private static byte[] Damaged(string damage)
    {
        var img = Image();
        switch (damage)
        {
            case "zeroed data refcount": SetRefcount(img, 6, 0); break;
            case "refcount block cleared": img.AsSpan(2 * Cluster, 512).Clear(); break;
            case "garbage refcount block": new Random(3).NextBytes(img.AsSpan(2 * Cluster, 16)); SetDirty(img); break;
            case "leak and raised refcount":
                Array.Resize(ref img, img.Length + Cluster);
                SetRefcount(img, Clusters, 1);
                SetRefcount(img, 7, 3);
                break;
            case "cleared copied flags":
                img[3 * Cluster] &= 0x7F;
                img[4 * Cluster + 8] &= 0x7F;
                break;
            case "two mappings of one cluster":
                // Guest cluster 2 now maps host cluster 6 too; host cluster 7 is orphaned (a leak).
                BinaryPrimitives.WriteUInt64BigEndian(img.AsSpan(4 * Cluster + 16), Copied | (6UL * Cluster));
                break;
        }
        return img;
    }

    [Theory]
    [MemberData(nameof(Damages))]
    public void A_crash_after_any_write_of_a_repair_never_under_counts_a_cluster_and_a_second_repair_finishes(string damage)
    {
        var img = Damaged(damage);
        var before = ImageChecker.Check(new RecordingDevice(img), "img");
        var underBefore = UnderCounted(before);
        var device = new RecordingDevice(img);
        var result = ImageRepair.Repair(device, "img", RepairMode.All);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(GuestData(img), GuestData(device.Data));

        for (var k = 0; k <= device.Writes.Count; k++)
        {
            var crashed = (byte[])img.Clone();
            foreach (var (offset, bytes) in device.Writes.Take(k)) RecordingDevice.Apply(ref crashed, offset, bytes);
            var state = ImageChecker.Check(new RecordingDevice(crashed), "crashed");
            // A cluster in use must never look freer than before: that is what lets it be handed out twice.
            Assert.Subset(underBefore, UnderCounted(state));
            Assert.Equal(GuestData(img), GuestData(crashed));
            var again = ImageRepair.Repair(new RecordingDevice(crashed), "crashed", RepairMode.All);
            Assert.True(again.ExitCode == 0, $"after write {k}: {string.Join("; ", again.After.Messages)}");
        }
    }

    [Fact]
    public void Leaks_mode_on_an_image_that_needs_a_rebuild_fails_without_writing()
    {
        var img = Damaged("zeroed data refcount");
        var device = new RecordingDevice(img);

        var result = ImageRepair.Repair(device, "img", RepairMode.Leaks);

        Assert.Equal(1, result.ExitCode);
        Assert.Equal("Input/output error", result.FailureReason);
        Assert.Contains("ERROR need to rebuild refcount structures", result.Messages);
        Assert.Empty(device.Writes);
    }

    [Fact]
    public void Leaks_mode_lowers_leaks_but_leaves_a_too_low_refcount_alone()
    {
        var img = Image();
        SetRefcount(img, 5, 4);
        // Guest cluster 2 also maps host cluster 6 (stored 1, two references): a corruption leaks mode must not touch.
        BinaryPrimitives.WriteUInt64BigEndian(img.AsSpan(4 * Cluster + 16), Copied | (6UL * Cluster));
        var device = new RecordingDevice(img);

        var result = ImageRepair.Repair(device, "img", RepairMode.Leaks);

        Assert.Equal(2, result.LeaksFixed);
        Assert.Equal(0, result.CorruptionsFixed);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("Repairing cluster 5 refcount=4 reference=1", result.Messages);
        Assert.Contains("ERROR cluster 6 refcount=1 reference=2", result.Messages);
    }

    [Fact]
    public void Repair_refuses_a_read_only_device()
    {
        Assert.Throws<InvalidOperationException>(() => ImageRepair.Repair(new RecordingDevice(Image(), readOnly: true), "img", RepairMode.All));
    }
}
