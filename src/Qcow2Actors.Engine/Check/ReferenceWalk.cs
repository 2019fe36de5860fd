using Qcow2Actors.Engine.Info;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Check;

/// <summary>
/// Counts, per host cluster, every reference the image's structures make (qemu's
/// calculate_refcounts): the header, the active and snapshot L1/L2 tables and their data, the
/// snapshot table, the refcount table and blocks, the FDE area and the bitmaps. Problems met on
/// the way are reported as qemu-img reports them; the counts go to <see cref="CheckResult.References"/>.
/// </summary>
internal sealed class ReferenceWalk(CheckContext ctx, StoredRefcounts stored)
{
    private readonly long _cs = ctx.ClusterSize;
    private readonly int _cb = ctx.ClusterBits;
    private readonly ImageMetadata _meta = ctx.Meta;
    private CheckResult Result => ctx.Result;
    private ClusterReferenceCounts _counts = null!;

    /// <summary>Refcount blocks that lie past the end of the file (repair -r all counts them as qemu does).</summary>
    public List<long> RefblocksOutsideImage { get; } = [];

    /// <summary>The counted references.</summary>
    public ClusterReferenceCounts Counts => _counts;

    public void Run(IReadOnlyList<SnapshotEntry> snapshots, long snapshotsSize)
    {
        var nbClusters = (ctx.FileLength + _cs - 1) >> _cb;
        if (nbClusters > int.MaxValue - 1)
        {
            Result.CheckErrors++;
            throw new AbortCheck("File too large");
        }
        var sectors = (long)(_meta.VirtualSize / 512);
        Result.TotalClusters = (sectors * 512 + _cs - 1) >> _cb;
        _counts = new ClusterReferenceCounts(nbClusters, RefcountBlock.MaxValue(_meta.RefcountOrder));
        Result.References = _counts;

        Reference(0, _cs);
        CheckL1(_meta.L1TableOffset, _meta.L1Size, active: true);
        if (_meta.HasDataFile && snapshots.Count > 0)
            ctx.Corruption($"ERROR {snapshots.Count} snapshots in image with data file");
        foreach (var sn in snapshots)
        {
            var l1Offset = (ulong)sn.L1TableOffset;
            if ((l1Offset & (ulong)(_cs - 1)) != 0)
            {
                ctx.Corruption($"ERROR snapshot {sn.Id} ({sn.Name}) l1_offset=0x{l1Offset:x}: L1 table is not cluster aligned; snapshot table entry corrupted");
                continue;
            }
            if ((uint)sn.L1Size > Qcow2Header.MaxL1Size)
            {
                ctx.Corruption($"ERROR snapshot {sn.Id} ({sn.Name}) l1_size=0x{sn.L1Size:x}: L1 table is too large; snapshot table entry corrupted");
                continue;
            }
            CheckL1(l1Offset, (uint)sn.L1Size, active: false);
        }
        Reference(_meta.SnapshotsOffset, snapshotsSize);
        Reference(_meta.RefcountTableOffset, _meta.RefcountTableEntries * RefcountTableEntry.Size);
        if (_meta.FdeLength != 0) Reference(_meta.FdeOffset, (long)Math.Min(_meta.FdeLength, long.MaxValue));
        CheckBitmaps();
        CheckRefblocks();
    }

    /// <summary>qcow2_inc_refcounts_imrt: +1 on every cluster the byte range touches.</summary>
    private void Reference(ulong offset, long size)
    {
        if (size <= 0) return;
        if ((Int128)offset + size - ctx.FileLength >= _cs)
        {
            ctx.Corruption($"ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x{offset:x} size 0x{size:x}");
            return;
        }
        var first = (long)(offset >> _cb);
        var last = (long)((offset + (ulong)size - 1) >> _cb);
        for (var k = first; k <= last; k++)
        {
            if (!_counts.Increment(k))
            {
                ctx.Corruption($"ERROR: overflow cluster offset=0x{(ulong)k << _cb:x}");
                ctx.Error("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing");
            }
        }
    }

    private void CheckL1(ulong l1Offset, uint l1Size, bool active)
    {
        if (l1Size == 0) return;
        Reference(l1Offset, (long)l1Size * L1Entry.Size);
        var l1 = ctx.ReadL1(l1Offset, l1Size);
        var l2 = ctx.RentCluster();
        try
        {
            foreach (var entry in l1)
            {
                if (entry.Raw == 0) continue;
                if (entry.ReservedBits != 0)
                    ctx.Corruption($"ERROR found L1 entry with reserved bits set: {entry.Raw:x}");
                var l2Offset = (ulong)entry.L2Offset;
                Reference(l2Offset, _cs);
                if ((l2Offset & (ulong)(_cs - 1)) != 0)
                    ctx.Corruption($"ERROR l2_offset={l2Offset:x}: Table is not cluster aligned; L1 entry corrupted");
                ctx.ReadL2(l2, l2Offset, "ERROR: I/O error in check_refcounts_l2");
                CheckL2(l2, active, l2Offset);
            }
        }
        finally
        {
            CheckContext.ReturnCluster(l2);
        }
    }

    private void CheckL2(byte[] l2, bool active, ulong l2Offset)
    {
        ulong nextContiguous = 0;
        for (long i = ctx.NextNonZeroL2Entry(l2, 0); i < _meta.L2Entries; i = ctx.NextNonZeroL2Entry(l2, i + 1))
        {
            var entry = ctx.L2At(l2, i);
            var kind = ctx.Classify(entry);
            if (kind != L2EntryKind.Compressed && entry.StandardReservedBits != 0)
                ctx.Corruption($"ERROR found l2 entry with reserved bits set: {entry.Word0:x}");
            switch (kind)
            {
                case L2EntryKind.Compressed:
                {
                    var coffset = (ulong)entry.CompressedHostOffset(_cb);
                    if (entry.IsCopied)
                        ctx.Corruption($"ERROR: coffset=0x{coffset:x}: copied flag must never be set for compressed clusters");
                    var word0 = entry.Word0 & ~L2Entry.CopiedFlag;
                    if (_meta.HasDataFile)
                    {
                        ctx.Corruption($"ERROR compressed cluster {i} with data file, entry=0x{word0:x}");
                        break;
                    }
                    if (entry.Bitmap != 0)
                    {
                        ctx.Corruption($"ERROR compressed cluster {i} with non-zero subcluster allocation bitmap, entry=0x{word0:x}");
                        break;
                    }
                    var sectors = entry.CompressedSectors(_cb) + 1L;
                    Reference(coffset, sectors * L2Entry.SectorSize - (long)(coffset & (L2Entry.SectorSize - 1)));
                    if (active)
                    {
                        Result.AllocatedClusters++;
                        Result.CompressedClusters++;
                        // Compressed clusters share sectors, so qemu-img counts each as a fragment.
                        Result.FragmentedClusters++;
                    }
                    break;
                }
                case L2EntryKind.ZeroAllocated:
                case L2EntryKind.Normal:
                {
                    var offset = (ulong)entry.HostOffset;
                    if ((entry.ZeroBits & entry.AllocBits) != 0)
                        ctx.Corruption($"ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap");
                    if ((offset & (ulong)(_cs - 1)) != 0)
                    {
                        var containsData = _meta.ExtendedL2 ? entry.AllocBits != 0 : !entry.ZeroFlag;
                        if (containsData)
                        {
                            ctx.Corruption($"ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted.");
                        }
                        else if (ctx.Pass == CheckPass.RepairAll)
                        {
                            ctx.Corruption($"Repairing offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.");
                            // The guest reads zeros either way; qemu drops the bogus preallocation and stops counting it.
                            if (TryZeroL2Entry(l2Offset, i, entry.Bitmap)) break;
                        }
                        else
                        {
                            ctx.Corruption($"ERROR offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.");
                        }
                    }
                    if (active)
                    {
                        Result.AllocatedClusters++;
                        if (nextContiguous != 0 && offset != nextContiguous) Result.FragmentedClusters++;
                        nextContiguous = offset + (ulong)_cs;
                    }
                    // Data in an external data file is not refcounted.
                    if (!_meta.HasDataFile) Reference(offset, _cs);
                    break;
                }
                case L2EntryKind.Unallocated:
                    if (entry.AllocBits != 0)
                        ctx.Corruption("ERROR: Unallocated cluster has non-zero subcluster allocation map");
                    break;
            }
        }
    }

    /// <summary>qemu's fix_l2_entry_by_zero: rewrites one L2 entry as a plain zero cluster (subclusters: all zero).</summary>
    private bool TryZeroL2Entry(ulong l2Offset, long index, ulong bitmap)
    {
        if (!ctx.MayRewriteL2(l2Offset, stored.Table))
        {
            ctx.Error("ERROR: Overlap check failed");
            Result.CheckErrors++;
            return false;
        }
        var bytes = new byte[_meta.L2EntryBytes];
        // Extended: allocated subclusters become zero ones and the offset goes; standard: a plain zero entry.
        var zero = _meta.ExtendedL2
            ? new L2Entry(0, (bitmap | (bitmap << 32)) & L2Entry.ZeroMask)
            : L2Entry.Zero();
        L2Table.WriteEntry(bytes, 0, _meta.ExtendedL2, zero);
        ctx.Device.Write(bytes, (long)l2Offset + index * _meta.L2EntryBytes);
        ctx.Device.Flush();
        Result.Corruptions--;
        Result.CorruptionsFixed++;
        return true;
    }

    private void CheckBitmaps()
    {
        if (!_meta.BitmapsValid) return;
        Reference(_meta.BitmapDirectoryOffset, (long)_meta.BitmapDirectorySize);
        IReadOnlyList<BitmapDirectoryEntry> bitmaps;
        try
        {
            bitmaps = ImageMetadata.ReadBitmaps(ctx.Device, _meta, ValidationProfile.Check);
        }
        catch (Qcow2FormatException)
        {
            Result.Corruptions++;
            throw new AbortCheck("Invalid argument");
        }
        var chunk = new byte[64 * 1024];
        foreach (var bm in bitmaps)
        {
            var tableOffset = (ulong)bm.TableOffset;
            var tableSize = (uint)bm.TableSize;
            Reference(tableOffset, (long)tableSize * BitmapTableEntry.Size);
            // Only the part of the table inside the file is read; the rest is zeros (unallocated).
            var inFile = tableOffset >= (ulong)ctx.FileLength ? 0 : (long)Math.Min(tableSize * 8UL, (ulong)ctx.FileLength - tableOffset);
            for (long done = 0; done < inFile; done += chunk.Length)
            {
                var part = chunk.AsSpan(0, (int)Math.Min(chunk.Length, inFile - done) & ~7);
                ctx.ReadZeroFilled(part, (long)tableOffset + done);
                for (var i = 0; i < part.Length / BitmapTableEntry.Size; i++)
                {
                    var e = BitmapTableEntry.Read(part, i);
                    var offset = (ulong)e.DataOffset;
                    if ((e.Raw & BitmapTableEntry.ReservedMask) != 0 || (offset != 0 && ((e.Raw & BitmapTableEntry.AllOnesFlag) != 0 || (offset & (ulong)(_cs - 1)) != 0)))
                    {
                        Result.Corruptions++;
                        continue;
                    }
                    if (offset != 0) Reference(offset, _cs);
                }
            }
        }
    }

    /// <summary>A rebuild places new structures past every cluster the old ones touch, so a crash before the header switch leaves them intact.</summary>
    private void NoteOldStructure(ulong offset)
    {
        // Past the end of the file there is nothing a new structure could overwrite.
        if (offset >> _cb >= (ulong)_counts.Count) return;
        var end = (long)(offset >> _cb) + 1;
        if (end > Result.OldStructureEnd) Result.OldStructureEnd = end;
    }

    private void CheckRefblocks()
    {
        if (_meta.RefcountTableEntries > 0) NoteOldStructure(_meta.RefcountTableOffset + (ulong)(_meta.RefcountTableEntries * RefcountTableEntry.Size - 1));
        var table = stored.Table;
        for (var i = 0; i < table.Length; i++)
        {
            var entry = table[i];
            var offset = entry.Raw & RefcountTableEntry.OffsetMask;
            var cluster = (long)(offset >> _cb);
            if (entry.ReservedBits != 0)
            {
                ctx.Corruption($"ERROR refcount table entry {i} has reserved bits set");
                Result.NeedsRebuild = true;
                continue;
            }
            if ((offset & (ulong)(_cs - 1)) != 0)
            {
                ctx.Corruption($"ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted");
                Result.NeedsRebuild = true;
                NoteOldStructure(offset);
                continue;
            }
            if (cluster >= _counts.Count || offset > long.MaxValue)
            {
                if (ctx.Pass == CheckPass.RepairAll)
                {
                    // qemu grows the file to cover the block, counts that as fixed, then finds the block
                    // (zeros) describing nothing and rebuilds. We rebuild without growing the file to
                    // the stray offset, but count the same way so the fixed totals agree.
                    ctx.Error($"Repairing refcount block {i} is outside image");
                    Result.CorruptionsFixed++;
                    Result.NeedsRebuild = true;
                    RefblocksOutsideImage.Add(cluster);
                }
                else
                {
                    ctx.Corruption($"ERROR refcount block {i} is outside image");
                }
                continue;
            }
            if (offset != 0)
            {
                Reference(offset, _cs);
                NoteOldStructure(offset);
                if (_counts[cluster] != 1)
                {
                    ctx.Corruption($"ERROR refcount block {i} refcount={_counts[cluster]}");
                    Result.NeedsRebuild = true;
                }
            }
        }
    }
}
