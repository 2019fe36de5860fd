using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// The map of metadata clusters follows the tables while the image is open: a grown L1 or
/// refcount table is protected where it now lives and its old clusters are data again; an
/// L2 table copied away from a snapshot stays protected as the snapshot's.
/// </summary>
public sealed class MetadataMapUpkeepTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static Qcow2Header Header(string path) => ImageHeaderBlock.Read(ImageFileBytes.ReadAt(path, 0, 4096)).Header;

    [Fact]
    public async Task A_grown_L1_table_is_protected_at_its_new_place_and_the_old_one_is_not()
    {
        var path = _dir.File("grow.qcow2");
        await using var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = 64 << 20 });
        await image.WriteAsync(0, new byte[4096]);
        var map = image.WriteContext!.Metadata;
        long oldL1 = Header(path).L1TableOffset;
        Assert.Equal(MetadataKind.L1Table, map.KindsAt(oldL1, 8));

        await image.ResizeAsync(4L << 30); // 64 KiB clusters: 8 L1 entries instead of 1, a new table

        long newL1 = Header(path).L1TableOffset;
        Assert.NotEqual(oldL1, newL1);
        Assert.Equal(MetadataKind.L1Table, map.KindsAt(newL1, 64));
        Assert.Equal(MetadataKind.None, map.KindsAt(oldL1, 8) & MetadataKind.L1Table);
    }

    [Fact]
    public async Task A_grown_refcount_table_is_protected_at_its_new_place_and_the_old_one_is_not()
    {
        var path = _dir.File("refcounts.qcow2");
        // 512-byte clusters with 64-bit refcounts: a block covers 32 KiB, a one-cluster table 2 MiB.
        await using var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        await using var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = 64 << 20, ClusterSize = 512, RefcountBits = 64 });
        var map = image.WriteContext!.Metadata;
        long oldTable = Header(path).RefcountTableOffset;
        Assert.Equal(MetadataKind.RefcountTable, map.KindsAt(oldTable, 512));

        var data = new byte[1 << 20];
        for (long p = 0; p < (4 << 20); p += data.Length) await image.WriteAsync(p, data);
        await image.CheckpointAsync();

        var h = Header(path);
        Assert.NotEqual(oldTable, h.RefcountTableOffset);
        Assert.Equal(MetadataKind.RefcountTable, map.KindsAt(h.RefcountTableOffset, (long)h.RefcountTableClusters * 512));
        Assert.Equal(MetadataKind.None, map.KindsAt(oldTable, 512) & MetadataKind.RefcountTable);
        // Every refcount block the growth needed is protected too.
        var table = ImageFileBytes.ReadAt(path, h.RefcountTableOffset, h.RefcountTableClusters * 512);
        for (int i = 0; i < table.Length; i += 8)
        {
            long block = (long)new RefcountTableEntry(System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(table.AsSpan(i))).BlockOffset;
            if (block != 0) Assert.Equal(MetadataKind.RefcountBlock, map.KindsAt(block, 512));
        }
    }

    [QemuFact]
    public async Task An_L2_table_copied_away_from_a_snapshot_stays_protected_as_the_snapshots()
    {
        var path = _dir.File("snap.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", path, "64M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 0x11 0 128k", path).EnsureSuccess();
        QemuTools.QemuImg("snapshot", "-c", "s1", path).EnsureSuccess();
        long shared = (long)(ImageFileBytes.ReadU64(path, Header(path).L1TableOffset) & L1Entry.OffsetMask);

        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        await using (var image = await host.OpenAsync(path))
        {
            var map = image.WriteContext!.Metadata;
            Assert.Equal(MetadataKind.L2Table | MetadataKind.SnapshotL2, map.KindsAt(shared, 65536));
            await image.WriteAsync(0, new byte[4096]);
            long copy = (long)(image.WriteContext.L1Entry(0) & L1Entry.OffsetMask);
            Assert.NotEqual(shared, copy);
            Assert.Equal(MetadataKind.SnapshotL2, map.KindsAt(shared, 65536));
            Assert.Equal(MetadataKind.L2Table, map.KindsAt(copy, 65536));
        }
        QemuTools.AssertCheckClean(path);
    }
}
