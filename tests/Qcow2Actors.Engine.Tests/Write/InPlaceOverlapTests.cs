using System.Text.RegularExpressions;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// An already allocated cluster whose L2 entry was damaged to point at a metadata structure:
/// a guest write to it, by the owned-cluster fast path or through the table actor, must fail
/// with EIO (<see cref="Qcow2ImageCorruptException"/>), set the corrupt bit, and leave every
/// byte of the file but the header as it was, so <c>qemu-img check</c> still reads every table.
/// </summary>
public sealed partial class InPlaceOverlapTests(InPlaceOverlapTests.SnapshotImage source) : IClassFixture<InPlaceOverlapTests.SnapshotImage>, IDisposable
{
    private const long ClusterSize = 64 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public enum Target { L1, RefcountTable, RefcountBlock, L2, SnapshotTable, SnapshotL1, SnapshotL2, BitmapDirectory, BitmapTable }

    public enum WritePath { FastPath, TableActor }

    public static TheoryData<Target, WritePath> Cases()
    {
        var data = new TheoryData<Target, WritePath>();
        foreach (var t in Enum.GetValues<Target>())
            foreach (var p in Enum.GetValues<WritePath>())
                data.Add(t, p);
        return data;
    }

    [QemuTheory]
    [MemberData(nameof(Cases))]
    public async Task A_write_to_a_cluster_whose_entry_points_at_metadata_fails_with_EIO_and_marks_the_image_corrupt(Target target, WritePath path)
    {
        var layout = source.Layout;
        string img = _dir.File("img.qcow2");
        File.Copy(source.File, img);
        long structure = layout.OffsetOf(target);
        // Guest cluster 0 is owned (COPIED) after the snapshot: send its entry to the structure.
        ImageFileBytes.WriteU64(img, layout.ActiveL2, L2Entry.Standard(structure, copied: true).Word0);

        byte[] before;
        var write = new byte[path == WritePath.FastPath ? ClusterSize : 4096];
        Array.Fill(write, (byte)0xEE);
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            var image = await host.OpenAsync(img);
            var cache = image.WriteContext!.Layer.L2Tables;
            if (path == WritePath.FastPath)
            {
                // A read caches the L2 table: the write then goes straight to the device, no actor hop.
                await image.ReadAsync(ClusterSize, new byte[4096]);
                Assert.True(cache.TryGet(layout.ActiveL2, out _));
            }
            else
            {
                // Nothing cached yet: the write goes to the table actor, which loads the table and writes in place.
                Assert.False(cache.TryGet(layout.ActiveL2, out _));
            }
            before = await File.ReadAllBytesAsync(img);

            var ex = await Assert.ThrowsAsync<Qcow2ImageCorruptException>(async () =>
                await image.WriteAsync(path == WritePath.FastPath ? 0 : 4096, write));
            Assert.Contains(img, ex.Message);
            Assert.Contains(Structure(target), ex.Message);
            Assert.Contains($"0x{structure + (path == WritePath.FastPath ? 0 : 4096):X}", ex.Message);
            Assert.DoesNotContain('\n', ex.Message);
            Assert.True(image.IsReadOnly);
            Assert.Contains(Structure(target), image.ReadOnlyReason);
            // Read-only from now on, with the reason.
            var again = await Assert.ThrowsAnyAsync<IOException>(async () => await image.WriteAsync(8 << 20, write));
            Assert.Contains("corrupt", again.Message);
            await image.DisposeAsync();
        }

        var after = await File.ReadAllBytesAsync(img);
        Assert.True((ImageFileBytes.ReadU64(img, Qcow2Header.IncompatibleFeaturesOffset) & (ulong)IncompatibleFeatures.Corrupt) != 0, "corrupt bit");
        Assert.Equal(before.Length, after.Length);
        // Nothing but the header (and the bitmap's in-use flag) changed: not the structure, not any other table, not the data.
        Assert.True(WithoutBitmapInUse(before, layout).AsSpan((int)ClusterSize).SequenceEqual(WithoutBitmapInUse(after, layout).AsSpan((int)ClusterSize)),
            "bytes past the header changed");
        AssertQemuCheckReadsEveryTable(img);
    }

    /// <summary>
    /// The file with bitmap b0's in-use flag cleared: a write first has the journal hold the granule
    /// it dirties and marks the bitmap in use (before its data is refused), a change the check allows.
    /// </summary>
    private static byte[] WithoutBitmapInUse(byte[] file, ImageLayout layout)
    {
        var copy = (byte[])file.Clone();
        copy[layout.BitmapDirectory + BitmapDirectoryEntry.FlagsOffset + 3] &= unchecked((byte)~(byte)BitmapFlags.InUse);
        return copy;
    }

    [QemuFact]
    public async Task A_preallocated_zero_cluster_pointing_at_metadata_is_not_reused_for_data()
    {
        var layout = source.Layout;
        string img = _dir.File("zero.qcow2");
        File.Copy(source.File, img);
        ImageFileBytes.WriteU64(img, layout.ActiveL2, L2Entry.Zero(layout.L1, copied: true).Word0);

        byte[] before;
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            var image = await host.OpenAsync(img);
            before = await File.ReadAllBytesAsync(img);
            var ex = await Assert.ThrowsAsync<Qcow2ImageCorruptException>(async () => await image.WriteAsync(512, new byte[512]));
            Assert.Contains("active L1 table", ex.Message);
            await image.DisposeAsync();
        }
        var after = await File.ReadAllBytesAsync(img);
        Assert.True(WithoutBitmapInUse(before, layout).AsSpan((int)ClusterSize).SequenceEqual(WithoutBitmapInUse(after, layout).AsSpan((int)ClusterSize)),
            "bytes past the header changed");
        Assert.True((ImageFileBytes.ReadU64(img, Qcow2Header.IncompatibleFeaturesOffset) & (ulong)IncompatibleFeatures.Corrupt) != 0, "corrupt bit");
        AssertQemuCheckReadsEveryTable(img);
    }

    [QemuFact]
    public async Task A_subcluster_write_into_an_extended_L2_cluster_pointing_at_the_refcount_table_is_refused()
    {
        string img = _dir.File("ext.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", img, "64M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 0x11 0 4k", img).EnsureSuccess(); // subcluster 0 of cluster 0 allocated
        var h = Header(img);
        long l2 = (long)(ImageFileBytes.ReadU64(img, h.L1TableOffset) & L1Entry.OffsetMask);
        ImageFileBytes.WriteU64(img, l2, L2Entry.Extended(h.RefcountTableOffset, true, 1, 0).Word0);

        byte[] before;
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            var image = await host.OpenAsync(img);
            before = await File.ReadAllBytesAsync(img);
            // Subcluster 3 is not allocated yet: the actor writes just that subcluster in place.
            var ex = await Assert.ThrowsAsync<Qcow2ImageCorruptException>(async () => await image.WriteAsync(3 * 2048, new byte[2048]));
            Assert.Contains("refcount table", ex.Message);
            await image.DisposeAsync();
        }
        var after = await File.ReadAllBytesAsync(img);
        Assert.True(before.AsSpan((int)ClusterSize).SequenceEqual(after.AsSpan((int)ClusterSize)), "bytes past the header changed");
        AssertQemuCheckReadsEveryTable(img);
    }

    [QemuFact]
    public async Task A_v2_image_is_stored_as_v3_so_that_it_can_carry_the_corrupt_bit()
    {
        string img = _dir.File("v2.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-o", "compat=0.10", img, "64M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 0x11 0 64k", img).EnsureSuccess();
        var h = Header(img);
        long l2 = (long)(ImageFileBytes.ReadU64(img, h.L1TableOffset) & L1Entry.OffsetMask);
        ImageFileBytes.WriteU64(img, l2, L2Entry.Standard(h.RefcountTableOffset, copied: true).Word0);

        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            var image = await host.OpenAsync(img);
            var ex = await Assert.ThrowsAsync<Qcow2ImageCorruptException>(async () => await image.WriteAsync(0, new byte[4096]));
            Assert.Contains("refcount table", ex.Message);
            await image.DisposeAsync();
        }
        var info = System.Text.Json.JsonDocument.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut).RootElement;
        Assert.True(info.GetProperty("format-specific").GetProperty("data").GetProperty("corrupt").GetBoolean());
        AssertQemuCheckReadsEveryTable(img);
    }

    private static string Structure(Target target) => target switch
    {
        Target.L1 => "active L1 table",
        Target.RefcountTable => "refcount table",
        Target.RefcountBlock => "refcount block",
        Target.L2 => "active L2 table",
        Target.SnapshotTable => "snapshot table",
        Target.SnapshotL1 => "snapshot L1 table",
        Target.SnapshotL2 => "snapshot L2 table",
        Target.BitmapDirectory => "bitmap directory",
        _ => "bitmap table",
    };

    /// <summary>
    /// `qemu-img check` finds the damage we were given (exit 2: a cluster referenced twice, a leak)
    /// and nothing it could not read: its only complaints are refcount mismatches (of a cluster, or of
    /// a refcount block itself) and leaks.
    /// </summary>
    private static void AssertQemuCheckReadsEveryTable(string img)
    {
        // A write that dirtied a bitmap granule left the journal holding it (journal-pending): replayed
        // first, as `q2a check -r` does with a corrupt image, so QEMU can open the file at all.
        PendingJournal.ReplayIntoCorruptImage(img);
        var check = QemuTools.QemuImg("check", img);
        string output = check.StdOut + check.StdErr;
        Assert.True(check.ExitCode == 2, $"qemu-img check exit {check.ExitCode}: {output}");
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (line.StartsWith("ERROR", StringComparison.Ordinal))
                Assert.Matches(RefcountMismatch(), line);
            Assert.DoesNotContain("I/O error", line, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("Can't", line, StringComparison.Ordinal);
            Assert.DoesNotContain("could not", line, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("failed", line, StringComparison.OrdinalIgnoreCase);
        }
        Assert.Contains("errors were found on the image", output);
    }

    [GeneratedRegex(@"^ERROR (cluster \d+ refcount=\d+ reference=\d+|refcount block \d+ refcount=\d+)$")]
    private static partial Regex RefcountMismatch();

    private static Qcow2Header Header(string img) =>
        ImageHeaderBlock.Read(ImageFileBytes.ReadAt(img, 0, (int)ClusterSize)).Header;

    /// <summary>Where each structure of the source image lives.</summary>
    public sealed record ImageLayout(long L1, long RefcountTable, long RefcountBlock, long ActiveL2, long SnapshotTable,
        long SnapshotL1, long SnapshotL2, long BitmapDirectory, long BitmapTable)
    {
        public long OffsetOf(Target t) => t switch
        {
            Target.L1 => L1,
            Target.RefcountTable => RefcountTable,
            Target.RefcountBlock => RefcountBlock,
            Target.L2 => ActiveL2,
            Target.SnapshotTable => SnapshotTable,
            Target.SnapshotL1 => SnapshotL1,
            Target.SnapshotL2 => SnapshotL2,
            Target.BitmapDirectory => BitmapDirectory,
            _ => BitmapTable,
        };
    }

    /// <summary>
    /// Built once per class by QEMU's tools: data, a snapshot, more data (so the active L2 table and
    /// guest clusters 0-1 are owned again), and a persistent bitmap (directory and table).
    /// </summary>
    public sealed class SnapshotImage : IDisposable
    {
        private readonly TempDir _dir = new();
        private readonly Lazy<ImageLayout> _layout;

        public SnapshotImage() => _layout = new Lazy<ImageLayout>(Build);

        public string File => _dir.File("source.qcow2");

        public ImageLayout Layout => _layout.Value;

        private ImageLayout Build()
        {
            QemuTools.QemuImg("create", "-q", "-f", "qcow2", File, "64M").EnsureSuccess();
            QemuTools.QemuIo("-c", "write -P 0x11 0 256k", File).EnsureSuccess();
            QemuTools.QemuImg("snapshot", "-c", "s1", File).EnsureSuccess();
            QemuTools.QemuIo("-c", "write -P 0x22 0 128k", File).EnsureSuccess();
            QemuTools.QemuImg("bitmap", "--add", File, "b0").EnsureSuccess();
            QemuTools.AssertCheckClean(File);

            var block = ImageHeaderBlock.Read(ImageFileBytes.ReadAt(File, 0, (int)ClusterSize));
            var h = block.Header;
            long activeL1Entry = (long)ImageFileBytes.ReadU64(File, h.L1TableOffset);
            Assert.True((activeL1Entry & unchecked((long)L1Entry.CopiedFlag)) != 0, "the active L2 table is owned after the second write");
            long activeL2 = activeL1Entry & (long)L1Entry.OffsetMask;
            Assert.True(new L2Entry(ImageFileBytes.ReadU64(File, activeL2)).IsCopied, "guest cluster 0 is owned after the second write");
            long snapshotL1 = (long)ImageFileBytes.ReadU64(File, h.SnapshotsOffset + SnapshotEntry.L1TableOffsetOffset);
            long snapshotL2 = (long)(ImageFileBytes.ReadU64(File, snapshotL1) & L1Entry.OffsetMask);
            var bitmaps = block.Bitmaps ?? throw new InvalidOperationException("qemu-img bitmap --add left no bitmaps extension");
            long bitmapTable = (long)ImageFileBytes.ReadU64(File, bitmaps.DirectoryOffset + BitmapDirectoryEntry.TableOffsetOffset);
            var layout = new ImageLayout(h.L1TableOffset, h.RefcountTableOffset,
                (long)ImageFileBytes.ReadU64(File, h.RefcountTableOffset), activeL2, h.SnapshotsOffset,
                snapshotL1, snapshotL2, bitmaps.DirectoryOffset, bitmapTable);
            // Every structure in a cluster of its own (else a case would test two at once).
            long[] all = [layout.L1, layout.RefcountTable, layout.RefcountBlock, layout.ActiveL2, layout.SnapshotTable,
                layout.SnapshotL1, layout.SnapshotL2, layout.BitmapDirectory, layout.BitmapTable];
            Assert.Equal(all.Length, all.Select(o => o / ClusterSize).Distinct().Count());
            Assert.DoesNotContain(0, all);
            return layout;
        }

        public void Dispose() => _dir.Dispose();
    }
}
