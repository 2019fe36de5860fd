using System.Buffers.Binary;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Info;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Check;

/// <summary>
/// Read-only consistency check of a qcow2 image (FORMAT.md §12), counting the way
/// <c>qemu-img check</c> counts so both report the same corruptions, leaks and exit code
/// on the same image. It counts every reference per host cluster (header, active and
/// snapshot L1/L2/data, snapshot table, refcount table and blocks, bitmaps, FDE area),
/// compares with the stored refcounts at the image's width, then checks the COPIED flags.
/// </summary>
public static class ImageChecker
{
    private const ulong L1ReservedMask = 0x7F000000000001FFUL;
    private const ulong TableOffsetMask = 0x00FFFFFFFFFFFE00UL;
    private const ulong L2StdReservedMask = 0x3F000000000001FEUL;
    private const ulong RefTableReservedMask = 0x1FFUL;
    private const ulong RefTableOffsetMask = ~0x1FFUL;
    private const ulong Copied = 1UL << 63;
    private const ulong Compressed = 1UL << 62;
    private const ulong ZeroFlag = 1UL;
    private const ulong BitmapAllAlloc = 0xFFFFFFFFUL;
    private const ulong BitmapEntryReservedMask = 0xFF000000000001FEUL;
    private const int RefblockCacheSize = 64;

    /// <summary>
    /// Opens <paramref name="path"/> read-only and checks it; a journal-pending image in the state
    /// <c>q2a recover</c> will leave (see <see cref="PendingJournal"/>), without writing anything.
    /// </summary>
    /// <exception cref="Qcow2FormatException">The header is not one a qcow2 opener may accept.</exception>
    /// <exception cref="ImageLockException">Without <paramref name="forceShare"/>: another process is writing the image.</exception>
    /// <exception cref="IOException">The image is journal-pending and its journal is missing.</exception>
    public static CheckResult CheckFile(string path, bool forceShare = false)
    {
        using var imageLock = ImageLock.Acquire(path, forceShare ? LockMode.ForceShareReader : LockMode.Reader);
        // A journal-pending image is checked as recovery will leave it (replayed in memory).
        using var device = PendingJournal.OpenRecovered(path);
        return Check(device, path);
    }

    /// <summary>
    /// Checks the image on <paramref name="device"/>. Problems inside the image are counted in
    /// the result; only a header no opener may accept throws.
    /// </summary>
    /// <exception cref="Qcow2FormatException">The header is not one a qcow2 opener may accept.</exception>
    public static CheckResult Check(IBlockDevice device, string filename) => Check(device, filename, CheckPass.Plain);

    /// <summary>
    /// The check as one of qemu-img's passes: <see cref="CheckPass.Plain"/> is <c>qemu-img check</c>;
    /// the repair passes count and compare the same way but stop before the COPIED check (the
    /// repair runs it after fixing refcounts) and record what a rebuild needs.
    /// </summary>
    internal static CheckResult Check(IBlockDevice device, string filename, CheckPass pass)
    {
        var meta = ImageMetadata.Load(device, forCheck: true);
        var run = new Run(device, meta, new CheckResult { Filename = filename, RefcountBits = meta.RefcountBits }, pass);
        try
        {
            run.Execute();
        }
        catch (IOException)
        {
            run.Result.CheckErrors++;
            run.Result.AbortReason ??= "Input/output error";
        }
        return run.Result;
    }

    /// <summary>
    /// Checks the COPIED flags of the active L1 and L2 tables against the stored refcounts as they
    /// are now (qemu's check_oflag_copied), rewriting wrong flags when <paramref name="repair"/> is set.
    /// The result carries the remaining <see cref="CheckResult.Corruptions"/> and the fixed count.
    /// </summary>
    internal static CheckResult FixCopiedFlags(IBlockDevice device, string filename, bool repair)
    {
        var meta = ImageMetadata.Load(device, forCheck: true);
        var run = new Run(device, meta, new CheckResult { Filename = filename, RefcountBits = meta.RefcountBits }, CheckPass.Plain);
        try
        {
            run.CopiedOnly(repair);
        }
        catch (AbortCheck abort)
        {
            run.Result.AbortReason = abort.Message;
        }
        catch (IOException)
        {
            run.Result.CheckErrors++;
            run.Result.AbortReason ??= "Input/output error";
        }
        return run.Result;
    }

    private sealed class AbortCheck(string reason) : Exception(reason);

    private sealed class Run(IBlockDevice device, ImageMetadata meta, CheckResult result, CheckPass pass)
    {
        public CheckResult Result { get; } = result;
        private readonly long _cs = meta.ClusterSize;
        private readonly int _cb = meta.ClusterBits;
        private readonly long _fileLength = device.Length;
        private ClusterReferenceCounts _counts = null!;
        private ulong[] _refTable = [];
        private readonly Dictionary<long, byte[]> _refblocks = [];
        private bool _refblockCorruptionReported;
        private IReadOnlyList<SnapshotInfo> _snapshots = [];
        private long _snapshotsSize;
        private readonly List<long> _refblocksOutsideImage = [];

        private void Error(string message) => Result._messages.Add(message);

        private void Corruption(string message)
        {
            Result.Corruptions++;
            Error(message);
        }

        public void Execute()
        {
            try
            {
                ReadSnapshotTable();
                CheckRefcounts();
            }
            catch (AbortCheck abort)
            {
                Result.AbortReason = abort.Message;
            }
        }

        private void ReadSnapshotTable()
        {
            if (meta.SnapshotCount > Qcow2Header.MaxSnapshots)
            {
                Result.CheckErrors++;
                Error("q2a: ERROR snapshot table too large");
                Error($"You can force-remove all {meta.SnapshotCount - Qcow2Header.MaxSnapshots} overhanging snapshots with qemu-img check -r all");
                throw new AbortCheck("File too large");
            }
            var bytes = (ulong)meta.SnapshotCount * 40;
            if (meta.SnapshotsOffset > long.MaxValue || (meta.SnapshotsOffset & (ulong)(_cs - 1)) != 0 || bytes > long.MaxValue - meta.SnapshotsOffset)
            {
                Result.CheckErrors++;
                Error("q2a: ERROR snapshot table offset invalid");
                throw new AbortCheck("Invalid argument");
            }
            try
            {
                (_snapshots, _snapshotsSize) = ImageMetadata.ReadSnapshots(device, meta);
            }
            catch (Qcow2FormatException e)
            {
                Result.CheckErrors++;
                Error($"q2a: ERROR failed to read the snapshot table: {e.Problem}");
                throw new AbortCheck("File too large");
            }
            if (meta.Version >= 3)
            {
                for (var i = 0; i < _snapshots.Count; i++)
                    if (_snapshots[i].ExtraDataSize < 16)
                        Corruption($"ERROR snapshot table entry {i} is incomplete");
            }
        }

        private void CheckRefcounts()
        {
            var nbClusters = (_fileLength + _cs - 1) >> _cb;
            if (nbClusters > int.MaxValue - 1)
            {
                Result.CheckErrors++;
                throw new AbortCheck("File too large");
            }
            var sectors = (long)(meta.VirtualSize / 512);
            Result.TotalClusters = (sectors * 512 + _cs - 1) >> _cb;
            var max = meta.RefcountBits == 64 ? ulong.MaxValue : (1UL << meta.RefcountBits) - 1;
            _counts = new ClusterReferenceCounts(nbClusters, max);
            Result.References = _counts;
            LoadRefcountTable();

            Reference(0, _cs);
            CheckL1(meta.L1TableOffset, meta.L1Size, active: true);
            if (meta.HasDataFile && _snapshots.Count > 0)
                Corruption($"ERROR {_snapshots.Count} snapshots in image with data file");
            foreach (var sn in _snapshots)
            {
                if ((sn.L1TableOffset & (ulong)(_cs - 1)) != 0)
                {
                    Corruption($"ERROR snapshot {sn.Id} ({sn.Name}) l1_offset=0x{sn.L1TableOffset:x}: L1 table is not cluster aligned; snapshot table entry corrupted");
                    continue;
                }
                if (sn.L1Size > Qcow2Header.MaxL1Size)
                {
                    Corruption($"ERROR snapshot {sn.Id} ({sn.Name}) l1_size=0x{sn.L1Size:x}: L1 table is too large; snapshot table entry corrupted");
                    continue;
                }
                CheckL1(sn.L1TableOffset, sn.L1Size, active: false);
            }
            Reference(meta.SnapshotsOffset, _snapshotsSize);
            Reference(meta.RefcountTableOffset, meta.RefcountTableEntries * 8);
            if (meta.FdeLength != 0) Reference(meta.FdeOffset, (long)Math.Min(meta.FdeLength, long.MaxValue));
            CheckBitmaps();
            CheckRefblocks();
            Result.PreCompareCorruptions = Result.Corruptions;
            Result.PreCompareLeaks = Result.Leaks;
            Result.PreCompareCheckErrors = Result.CheckErrors;
            Result.CompareMessageStart = Result._messages.Count;
            Compare();
            if (pass == CheckPass.Plain) CheckCopiedFlags(repair: false);
        }

        public void CopiedOnly(bool repair)
        {
            LoadRefcountTable();
            CheckCopiedFlags(repair);
        }

        private void LoadRefcountTable()
        {
            // At most 8 MiB (validated by the opener); the part past the end of the file reads as zeros.
            var entries = meta.RefcountTableEntries;
            _refTable = new ulong[entries];
            var buffer = new byte[Math.Min(entries * 8, 1 << 20)];
            for (long done = 0; done < entries * 8; done += buffer.Length)
            {
                var chunk = buffer.AsSpan(0, (int)Math.Min(buffer.Length, entries * 8 - done));
                ReadZeroFilled(chunk, (long)meta.RefcountTableOffset + done);
                for (var i = 0; i < chunk.Length; i += 8)
                    _refTable[(done + i) / 8] = BinaryPrimitives.ReadUInt64BigEndian(chunk[i..]);
            }
        }

        private void ReadZeroFilled(Span<byte> buffer, long offset)
        {
            if (offset < 0) { buffer.Clear(); return; }
            ImageMetadata.ReadZeroFilled(device, buffer, offset);
        }

        /// <summary>qcow2_inc_refcounts_imrt: +1 on every cluster the byte range touches.</summary>
        private void Reference(ulong offset, long size)
        {
            if (size <= 0) return;
            if ((Int128)offset + size - _fileLength >= _cs)
            {
                Corruption($"ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x{offset:x} size 0x{size:x}");
                return;
            }
            var first = (long)(offset >> _cb);
            var last = (long)((offset + (ulong)size - 1) >> _cb);
            for (var k = first; k <= last; k++)
            {
                if (!_counts.Increment(k))
                {
                    Corruption($"ERROR: overflow cluster offset=0x{(ulong)k << _cb:x}");
                    Error("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing");
                }
            }
        }

        /// <summary>Reads an L1 table; entries past the end of the file are zero and are not allocated for.</summary>
        private ulong[] ReadL1(ulong offset, uint size)
        {
            var inFile = offset >= (ulong)_fileLength ? 0 : (long)Math.Min((ulong)size, ((ulong)_fileLength - offset + 7) / 8);
            var table = new ulong[inFile];
            var bytes = new byte[inFile * 8];
            ReadZeroFilled(bytes, (long)offset);
            for (var i = 0; i < table.Length; i++) table[i] = BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(i * 8));
            return table;
        }

        private void CheckL1(ulong l1Offset, uint l1Size, bool active)
        {
            if (l1Size == 0) return;
            Reference(l1Offset, (long)l1Size * 8);
            var l1 = ReadL1(l1Offset, l1Size);
            var l2 = new byte[_cs];
            foreach (var entry in l1)
            {
                if (entry == 0) continue;
                if ((entry & L1ReservedMask) != 0)
                    Corruption($"ERROR found L1 entry with reserved bits set: {entry:x}");
                var l2Offset = entry & TableOffsetMask;
                Reference(l2Offset, _cs);
                if ((l2Offset & (ulong)(_cs - 1)) != 0)
                    Corruption($"ERROR l2_offset={l2Offset:x}: Table is not cluster aligned; L1 entry corrupted");
                ReadL2(l2, l2Offset, "ERROR: I/O error in check_refcounts_l2");
                CheckL2(l2, active, l2Offset);
            }
        }

        private void ReadL2(byte[] l2, ulong l2Offset, string failure)
        {
            try
            {
                ReadZeroFilled(l2, (long)l2Offset);
            }
            catch (IOException)
            {
                Error(failure);
                Result.CheckErrors++;
                throw new AbortCheck("Input/output error");
            }
        }

        private (ulong Entry, ulong Bitmap) L2Entry(byte[] l2, long i) => meta.ExtendedL2
            ? (BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(i * 16))), BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(i * 16 + 8))))
            : (BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan((int)(i * 8))), 0UL);

        private enum Kind { Unallocated, ZeroPlain, ZeroAlloc, Normal, Compressed }

        private Kind Classify(ulong entry)
        {
            if ((entry & Compressed) != 0) return Kind.Compressed;
            if ((entry & ZeroFlag) != 0 && !meta.ExtendedL2)
                return (entry & TableOffsetMask) != 0 ? Kind.ZeroAlloc : Kind.ZeroPlain;
            if ((entry & TableOffsetMask) == 0)
                // With a data file, offset 0 is a real offset; COPIED tells it from unallocated.
                return meta.HasDataFile && (entry & Copied) != 0 ? Kind.Normal : Kind.Unallocated;
            return Kind.Normal;
        }

        private void CheckL2(byte[] l2, bool active, ulong l2Offset)
        {
            ulong nextContiguous = 0;
            var csizeShift = 62 - (_cb - 8);
            var csizeMask = (1UL << (_cb - 8)) - 1;
            var coffsetMask = (1UL << csizeShift) - 1;
            for (long i = 0; i < meta.L2Entries; i++)
            {
                var (entry, bitmap) = L2Entry(l2, i);
                var kind = Classify(entry);
                if (kind != Kind.Compressed && (entry & L2StdReservedMask) != 0)
                    Corruption($"ERROR found l2 entry with reserved bits set: {entry:x}");
                switch (kind)
                {
                    case Kind.Compressed:
                    {
                        if ((entry & Copied) != 0)
                        {
                            Corruption($"ERROR: coffset=0x{entry & coffsetMask:x}: copied flag must never be set for compressed clusters");
                            entry &= ~Copied;
                        }
                        if (meta.HasDataFile)
                        {
                            Corruption($"ERROR compressed cluster {i} with data file, entry=0x{entry:x}");
                            break;
                        }
                        if (bitmap != 0)
                        {
                            Corruption($"ERROR compressed cluster {i} with non-zero subcluster allocation bitmap, entry=0x{entry:x}");
                            break;
                        }
                        var coffset = entry & coffsetMask;
                        var sectors = (long)((entry >> csizeShift) & csizeMask) + 1;
                        Reference(coffset, sectors * 512 - (long)(coffset & 511));
                        if (active)
                        {
                            Result.AllocatedClusters++;
                            Result.CompressedClusters++;
                            // Compressed clusters share sectors, so qemu-img counts each as a fragment.
                            Result.FragmentedClusters++;
                        }
                        break;
                    }
                    case Kind.ZeroAlloc:
                    case Kind.Normal:
                    {
                        var offset = entry & TableOffsetMask;
                        if (((bitmap >> 32) & bitmap) != 0)
                            Corruption($"ERROR offset={offset:x}: Allocated cluster has corrupted subcluster allocation bitmap");
                        if ((offset & (ulong)(_cs - 1)) != 0)
                        {
                            var containsData = meta.ExtendedL2 ? (bitmap & BitmapAllAlloc) != 0 : (entry & ZeroFlag) == 0;
                            if (containsData)
                            {
                                Corruption($"ERROR offset={offset:x}: Data cluster is not properly aligned; L2 entry corrupted.");
                            }
                            else if (pass == CheckPass.RepairAll)
                            {
                                Corruption($"Repairing offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.");
                                // The guest reads zeros either way; qemu drops the bogus preallocation and stops counting it.
                                if (TryZeroL2Entry(l2Offset, i, bitmap)) break;
                            }
                            else
                            {
                                Corruption($"ERROR offset={offset:x}: Preallocated cluster is not properly aligned; L2 entry corrupted.");
                            }
                        }
                        if (active)
                        {
                            Result.AllocatedClusters++;
                            if (nextContiguous != 0 && offset != nextContiguous) Result.FragmentedClusters++;
                            nextContiguous = offset + (ulong)_cs;
                        }
                        // Data in an external data file is not refcounted.
                        if (!meta.HasDataFile) Reference(offset, _cs);
                        break;
                    }
                    case Kind.Unallocated:
                        if ((bitmap & BitmapAllAlloc) != 0)
                            Corruption("ERROR: Unallocated cluster has non-zero subcluster allocation map");
                        break;
                }
            }
        }

        /// <summary>qemu's fix_l2_entry_by_zero: rewrites one L2 entry as a plain zero cluster (subclusters: all zero).</summary>
        private bool TryZeroL2Entry(ulong l2Offset, long index, ulong bitmap)
        {
            if (!MayRewriteL2(l2Offset))
            {
                Error("ERROR: Overlap check failed");
                Result.CheckErrors++;
                return false;
            }
            var entry = new byte[meta.L2EntryBytes];
            if (meta.ExtendedL2)
            {
                // Allocated subclusters become zero ones; word 0 (offset) becomes 0.
                var zeroBits = (bitmap | (bitmap << 32)) & 0xFFFFFFFF00000000UL;
                BinaryPrimitives.WriteUInt64BigEndian(entry.AsSpan(8), zeroBits);
            }
            else
            {
                BinaryPrimitives.WriteUInt64BigEndian(entry, ZeroFlag);
            }
            device.Write(entry, (long)l2Offset + index * meta.L2EntryBytes);
            device.Flush();
            Result.Corruptions--;
            Result.CorruptionsFixed++;
            return true;
        }

        private void CheckBitmaps()
        {
            if (!meta.BitmapsValid) return;
            Reference(meta.BitmapDirectoryOffset, (long)meta.BitmapDirectorySize);
            IReadOnlyList<BitmapInfo> bitmaps;
            try
            {
                bitmaps = ImageMetadata.ReadBitmaps(device, meta);
            }
            catch (Qcow2FormatException)
            {
                Result.Corruptions++;
                throw new AbortCheck("Invalid argument");
            }
            var chunk = new byte[64 * 1024];
            foreach (var bm in bitmaps)
            {
                Reference(bm.TableOffset, (long)bm.TableSize * 8);
                // Only the part of the table inside the file is read; the rest is zeros (unallocated).
                var inFile = bm.TableOffset >= (ulong)_fileLength ? 0 : (long)Math.Min(bm.TableSize * 8UL, (ulong)_fileLength - bm.TableOffset);
                for (long done = 0; done < inFile; done += chunk.Length)
                {
                    var part = chunk.AsSpan(0, (int)Math.Min(chunk.Length, inFile - done) & ~7);
                    ReadZeroFilled(part, (long)bm.TableOffset + done);
                    for (var i = 0; i < part.Length; i += 8)
                    {
                        var e = BinaryPrimitives.ReadUInt64BigEndian(part[i..]);
                        var offset = e & TableOffsetMask;
                        if ((e & BitmapEntryReservedMask) != 0 || (offset != 0 && ((e & 1) != 0 || (offset & (ulong)(_cs - 1)) != 0)))
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
            if (meta.RefcountTableEntries > 0) NoteOldStructure(meta.RefcountTableOffset + (ulong)(meta.RefcountTableEntries * 8 - 1));
            for (var i = 0; i < _refTable.Length; i++)
            {
                var raw = _refTable[i];
                var offset = raw & RefTableOffsetMask;
                var cluster = (long)(offset >> _cb);
                if ((raw & RefTableReservedMask) != 0)
                {
                    Corruption($"ERROR refcount table entry {i} has reserved bits set");
                    Result.NeedsRebuild = true;
                    continue;
                }
                if ((offset & (ulong)(_cs - 1)) != 0)
                {
                    Corruption($"ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted");
                    Result.NeedsRebuild = true;
                    NoteOldStructure(offset);
                    continue;
                }
                if (cluster >= _counts.Count || offset > long.MaxValue)
                {
                    if (pass == CheckPass.RepairAll)
                    {
                        // qemu grows the file to cover the block, counts that as fixed, then finds the block
                        // (zeros) describing nothing and rebuilds. We rebuild without growing the file to
                        // the stray offset, but count the same way so the fixed totals agree.
                        Error($"Repairing refcount block {i} is outside image");
                        Result.CorruptionsFixed++;
                        Result.NeedsRebuild = true;
                        _refblocksOutsideImage.Add(cluster);
                    }
                    else
                    {
                        Corruption($"ERROR refcount block {i} is outside image");
                    }
                    continue;
                }
                if (offset != 0)
                {
                    Reference(offset, _cs);
                    NoteOldStructure(offset);
                    if (_counts[cluster] != 1)
                    {
                        Corruption($"ERROR refcount block {i} refcount={_counts[cluster]}");
                        Result.NeedsRebuild = true;
                    }
                }
            }
        }

        /// <summary>qcow2_get_refcount: false (an I/O error) when the refcount block pointer is unusable.</summary>
        private bool TryGetStored(long cluster, out ulong refcount)
        {
            refcount = 0;
            var perBlockBits = _cb + 3 - meta.RefcountOrder;
            var tableIndex = cluster >> perBlockBits;
            if (tableIndex >= _refTable.Length) return true;
            var blockOffset = _refTable[tableIndex] & RefTableOffsetMask;
            if (blockOffset == 0) return true;
            if ((blockOffset & (ulong)(_cs - 1)) != 0)
            {
                if (!_refblockCorruptionReported)
                {
                    Error($"qcow2: Image is corrupt: Refblock offset 0x{blockOffset:x} unaligned (reftable index: 0x{tableIndex:x}); further non-fatal corruption events will be suppressed");
                    _refblockCorruptionReported = true;
                }
                return false;
            }
            if (!_refblocks.TryGetValue((long)blockOffset, out var block))
            {
                // Compare walks clusters in order, so a small cache serves nearly every lookup.
                if (_refblocks.Count >= RefblockCacheSize) _refblocks.Clear();
                block = new byte[_cs];
                ReadZeroFilled(block, blockOffset > long.MaxValue ? -1 : (long)blockOffset);
                _refblocks[(long)blockOffset] = block;
            }
            var index = cluster & ((1L << perBlockBits) - 1);
            refcount = ReadRefcount(block, index, meta.RefcountBits);
            return true;
        }

        internal static ulong ReadRefcount(ReadOnlySpan<byte> block, long index, int bits) => bits switch
        {
            64 => BinaryPrimitives.ReadUInt64BigEndian(block[(int)(index * 8)..]),
            32 => BinaryPrimitives.ReadUInt32BigEndian(block[(int)(index * 4)..]),
            16 => BinaryPrimitives.ReadUInt16BigEndian(block[(int)(index * 2)..]),
            8 => block[(int)index],
            // Sub-byte widths pack LSB first: entry 0 sits in the low bits of byte 0.
            _ => (ulong)((block[(int)(index * bits / 8)] >> (int)(index * bits % 8)) & ((1 << bits) - 1)),
        };

        private void Compare()
        {
            long highest = 0;
            for (long i = 0; i < _counts.Count; i++)
            {
                if (!TryGetStored(i, out var stored))
                {
                    Error($"Can't get refcount for cluster {i}: Input/output error");
                    Result.CheckErrors++;
                    continue;
                }
                ulong counted = _counts[i];
                if (stored > 0 || counted > 0) highest = i;
                if (stored == counted) continue;
                if (stored == 0) Result.NeedsRebuild = true;
                Result._mismatches.Add(new RefcountMismatch(i, stored, counted));
                if (stored < counted)
                {
                    Result.Corruptions++;
                    Error($"ERROR cluster {i} refcount={stored} reference={counted}");
                }
                else
                {
                    Result.Leaks++;
                    Error($"Leaked cluster {i} refcount={stored} reference={counted}");
                }
            }
            Result.ImageEndOffset = (highest + 1) * _cs;
            foreach (var cluster in _refblocksOutsideImage)
            {
                // The cluster qemu would have grown the file to: one reference (the block), refcount
                // read from the block qemu just zeroed.
                if (TryGetStored(cluster, out var stored) && stored < 1)
                    Corruption($"ERROR cluster {cluster} refcount={stored} reference=1");
            }
        }

        private void CheckCopiedFlags(bool repair)
        {
            var l1 = ReadL1(meta.L1TableOffset, meta.L1Size);
            var l2 = new byte[_cs];
            var verb = repair ? "Repairing" : "ERROR";
            for (var i = 0; i < l1.Length; i++)
            {
                var entry = l1[i];
                var l2Offset = entry & TableOffsetMask;
                if (l2Offset == 0) continue;
                if (!TryGetStored((long)(l2Offset >> _cb), out var refcount)) continue;
                if ((refcount == 1) != ((entry & Copied) != 0))
                {
                    Corruption($"{verb} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={entry:x} refcount={refcount}");
                    if (repair)
                    {
                        var fixedEntry = refcount == 1 ? entry | Copied : entry & ~Copied;
                        var bytes = new byte[8];
                        BinaryPrimitives.WriteUInt64BigEndian(bytes, fixedEntry);
                        device.Write(bytes, (long)meta.L1TableOffset + 8L * i);
                        Result.Corruptions--;
                        Result.CorruptionsFixed++;
                    }
                }
                ReadL2(l2, l2Offset, "ERROR: Could not read L2 table: Input/output error");
                var dirty = 0;
                for (long j = 0; j < meta.L2Entries; j++)
                {
                    var (l2Entry, _) = L2Entry(l2, j);
                    var kind = Classify(l2Entry);
                    if (kind is not (Kind.Normal or Kind.ZeroAlloc)) continue;
                    ulong dataRefcount = 1;
                    if (!meta.HasDataFile && !TryGetStored((long)((l2Entry & TableOffsetMask) >> _cb), out dataRefcount)) continue;
                    if ((dataRefcount == 1) != ((l2Entry & Copied) != 0))
                    {
                        Corruption($"{verb} OFLAG_COPIED data cluster: l2_entry={l2Entry:x} refcount={dataRefcount}");
                        if (repair)
                        {
                            var at = (int)(j * meta.L2EntryBytes);
                            BinaryPrimitives.WriteUInt64BigEndian(l2.AsSpan(at), dataRefcount == 1 ? l2Entry | Copied : l2Entry & ~Copied);
                            dirty++;
                        }
                    }
                }
                if (dirty == 0) continue;
                if (!MayRewriteL2(l2Offset))
                {
                    Error("ERROR: Could not write L2 table; metadata overlap check failed: Input/output error");
                    Result.CheckErrors++;
                    throw new AbortCheck("Input/output error");
                }
                device.Write(l2, (long)l2Offset);
                Result.Corruptions -= dirty;
                Result.CorruptionsFixed += dirty;
            }
        }

        /// <summary>
        /// qemu's overlap check before rewriting an L2 table: never write over the header, the
        /// active L1, the refcount table or a refcount block (a corrupt L1 entry may point there).
        /// </summary>
        private bool MayRewriteL2(ulong l2Offset)
        {
            if ((l2Offset & (ulong)(_cs - 1)) != 0 || l2Offset == 0 || l2Offset >= (ulong)_fileLength) return false;
            static bool Inside(ulong offset, ulong start, ulong bytes) => bytes > 0 && offset + 1 > start && offset < start + bytes;
            var l2End = l2Offset + (ulong)_cs - 1;
            bool Hits(ulong start, ulong bytes) => Inside(l2Offset, start, bytes) || Inside(l2End, start, bytes) || Inside(start, l2Offset, (ulong)_cs);
            if (Hits(meta.L1TableOffset, (ulong)meta.L1Size * 8)) return false;
            if (Hits(meta.RefcountTableOffset, (ulong)meta.RefcountTableEntries * 8)) return false;
            foreach (var raw in _refTable)
            {
                var block = raw & RefTableOffsetMask;
                if (block != 0 && Hits(block, (ulong)_cs)) return false;
            }
            return true;
        }
    }
}
