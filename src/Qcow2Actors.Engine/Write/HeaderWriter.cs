using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Write;

/// <summary>
/// The one writer of cluster 0 (header, extensions, backing name) of an image. An open image
/// has one instance, which owns the header block: the journal's dirty mark, the checkpoint's
/// clean mark and new table locations, the corrupt mark and header field changes all go
/// through it, under its lock, so no two of them interleave their writes. Recovery and the
/// offline snapshot editors use its static methods, which encode with Format's header codec
/// the same way. Readers get <see cref="Snapshot"/>: a copy published after every change,
/// never the header being changed.
/// </summary>
internal sealed class HeaderWriter
{
    private readonly object _lock = new();
    private readonly IBlockDevice _device;
    private ImageHeaderBlock _block;
    private volatile Qcow2Header _snapshot;

    public HeaderWriter(IBlockDevice device, ImageHeaderBlock block)
    {
        _device = device;
        _block = block;
        _snapshot = block.Header.Clone();
    }

    /// <summary>The header block as this writer keeps it; change it only through this writer.</summary>
    public ImageHeaderBlock Block => _block;

    /// <summary>A copy of the header as of the last change (no one changes it).</summary>
    public Qcow2Header Snapshot => _snapshot;

    /// <summary>True while the header on disk carries the dirty and journal-pending bits.</summary>
    public bool BitsOnDisk { get; private set; }

    /// <summary>
    /// Sets the dirty and journal-pending bits in the header on disk (not flushed: the journal's
    /// flush that follows makes them durable before the first batch). Returns true when it wrote.
    /// </summary>
    public bool MarkDirty()
    {
        lock (_lock)
        {
            if (BitsOnDisk) return false;
            var before = _block.EncodedLength;
            V2Promotion.Promote(_block);
            // QEMU must be able to name the bit it refuses: images qemu-img made carry only its own names.
            // An older name (images an earlier version made) is replaced by the current one.
            if (_block.FeatureNames?.Lookup(FeatureType.Incompatible, 63) is not FeatureNameTable.JournalPendingName)
                _block.FeatureNames = Create.ImageCreator.FittingFeatureNames(_block);
            _block.Header.IncompatibleFeatures |= IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending;
            WriteLocked(before);
            BitsOnDisk = true;
            return true;
        }
    }

    /// <summary>Clears both bits on disk (after a checkpoint emptied the journal); the caller flushes.</summary>
    public void MarkClean()
    {
        lock (_lock)
        {
            // Between the dirty and the clean header write nothing else may have changed the
            // header on disk: MarkClean also carries the checkpoint's new table locations.
            _block.Header.IncompatibleFeatures &= ~(IncompatibleFeatures.Dirty | IncompatibleFeatures.JournalPending);
            V2Promotion.Restore(_block);
            WriteLocked();
            BitsOnDisk = false;
        }
    }

    /// <summary>
    /// Sets the dirty bit alone (promoting a v2 header) before an online snapshot edit of the
    /// checkpointed image; the caller flushes. A crash during the edit then leaves an image whose
    /// next open rebuilds refcounts and COPIED flags, as after QEMU's lazy-refcount crash.
    /// </summary>
    public void MarkEditing()
    {
        lock (_lock)
        {
            var before = _block.EncodedLength;
            V2Promotion.Promote(_block);
            _block.Header.IncompatibleFeatures |= IncompatibleFeatures.Dirty;
            WriteLocked(before);
        }
    }

    /// <summary>
    /// Takes the header block as an edit outside this writer (an online snapshot edit) left it on
    /// disk; from now on changes start from it.
    /// </summary>
    public void Reload(ImageHeaderBlock block)
    {
        lock (_lock)
        {
            _block = block;
            _snapshot = block.Header.Clone();
        }
    }

    /// <summary>Sets the corrupt bit (promoting a v2 header, which has no bits) and writes cluster 0; the caller flushes.</summary>
    public void MarkCorrupt()
    {
        lock (_lock)
        {
            var before = _block.EncodedLength;
            V2Promotion.Promote(_block);
            _block.Header.IncompatibleFeatures |= IncompatibleFeatures.Corrupt;
            WriteLocked(before);
        }
    }

    /// <summary>Changes header fields in memory only (they reach the disk with the next header write).</summary>
    public void Change(Action<Qcow2Header> change)
    {
        lock (_lock)
        {
            change(_block.Header);
            _snapshot = _block.Header.Clone();
        }
    }

    /// <summary>
    /// Points the bitmaps extension (and autoclear bit 0) at a new directory (null: none), in memory only: the
    /// next header write (the checkpoint's clean mark) carries it.
    /// </summary>
    public void ChangeBitmaps(BitmapsExtension? extension)
    {
        lock (_lock)
        {
            // No bitmaps left: no extension and no autoclear bit, as QEMU leaves such an image.
            _block.Bitmaps = extension;
            if (extension is null) _block.Header.AutoclearFeatures &= ~AutoclearFeatures.Bitmaps;
            else _block.Header.AutoclearFeatures |= AutoclearFeatures.Bitmaps;
            _snapshot = _block.Header.Clone();
        }
    }

    /// <summary>
    /// True when cluster 0 has room for the bitmaps extension (or already carries it). Asked before a
    /// first bitmap is added, so a header that cannot take it refuses the add before any cluster is
    /// allocated, instead of failing the checkpoint's header write afterwards.
    /// </summary>
    public bool BitmapsExtensionFits()
    {
        lock (_lock)
        {
            if (_block.Bitmaps is not null) return true;
            return _block.EncodedLength + HeaderExtension.StoredSizeOf(BitmapsExtension.DataLength) <= _block.Header.ClusterSize;
        }
    }

    /// <summary>Changes header fields and writes cluster 0 in place (the caller flushes).</summary>
    public void Update(Action<Qcow2Header> change)
    {
        lock (_lock)
        {
            change(_block.Header);
            WriteLocked();
        }
    }

    /// <summary>
    /// Sets the backing file name and format (both null: no backing file) and writes cluster 0 in
    /// one write, zeroing what is left of a longer old name; the caller flushes. Refused, with
    /// nothing written, when the new name and extensions do not fit in cluster 0.
    /// </summary>
    /// <exception cref="InvalidOperationException">The header, its extensions and the name need more than one cluster.</exception>
    public void ChangeBacking(string? name, string? format)
    {
        lock (_lock)
        {
            int oldLength = _block.EncodedLength;
            var (oldName, oldFormat) = (_block.BackingFileName, _block.BackingFormat);
            _block.BackingFileName = name;
            _block.BackingFormat = name is null ? null : format;
            var cluster = new byte[_block.Header.ClusterSize];
            try
            {
                _block.Write(cluster);
            }
            catch (InvalidOperationException)
            {
                (_block.BackingFileName, _block.BackingFormat) = (oldName, oldFormat);
                _block.Write(cluster);
                throw;
            }
            _snapshot = _block.Header.Clone();
            MetadataEvents.Raise(MetadataEvent.HeaderUpdate, _device.Name);
            _device.Write(cluster.AsSpan(0, Math.Max(oldLength, _block.EncodedLength)), 0);
        }
    }

    private void WriteLocked(int lengthOnDisk = int.MaxValue)
    {
        _snapshot = _block.Header.Clone();
        Write(_device, _block, lengthOnDisk);
    }

    /// <summary>The unit a disk may tear a write at: only a write within one such sector is atomic.</summary>
    internal const int AtomicSector = 512;

    /// <summary>
    /// Writes the whole of cluster 0's header part (header, extensions, backing name) in place; the caller flushes.
    /// <paramref name="lengthOnDisk"/> is how long the header part on disk is now: when it fits in the first
    /// sector and the new one does not (a v2 header promoted, a feature name table added, which moves the
    /// extensions and the backing name), the tail beyond the first sector is written and flushed first, where
    /// the old header does not look, and only then the first sector, which switches to it. One write of both
    /// could be torn at a sector boundary by a power cut, leaving a new header whose backing name offset points
    /// into the old bytes (found by <c>q2a chaos --power-loss</c>).
    /// </summary>
    public static void Write(IBlockDevice device, ImageHeaderBlock block, int lengthOnDisk = int.MaxValue)
    {
        // Pooled (ClusterBuffers): a fresh 2 MiB array per header write (every open, close and recovery) costs page faults.
        var cluster = ClusterBuffers.Rent(block.Header.ClusterSize);
        try
        {
            block.Write(cluster);
            var length = block.EncodedLength;
            MetadataEvents.Raise(MetadataEvent.HeaderUpdate, device.Name);
            if (length > AtomicSector && lengthOnDisk <= AtomicSector)
            {
                device.Write(cluster.AsSpan(AtomicSector, length - AtomicSector), AtomicSector);
                device.Flush();
                device.Write(cluster.AsSpan(0, AtomicSector), 0);
                return;
            }
            device.Write(cluster.AsSpan(0, length), 0);
        }
        finally
        {
            ClusterBuffers.Return(cluster);
        }
    }

    /// <summary>
    /// Writes only the bytes of the fixed header that differ between <paramref name="before"/> (as on
    /// disk) and <paramref name="next"/>, in one write: the fields an offline edit switches (sizes,
    /// table offsets, snapshot count and table) all lie in bytes 24-71, one sector, so the image moves
    /// from the old tables to the new ones at once. Returns false when nothing differs.
    /// </summary>
    public static bool WriteChangedFields(IBlockDevice device, Qcow2Header before, Qcow2Header next)
    {
        var old = new byte[before.Version == 2 ? Qcow2Header.V2HeaderLength : before.HeaderLength];
        var now = new byte[old.Length];
        before.Write(old);
        next.Write(now);
        int first = 0, last = old.Length - 1;
        while (first < old.Length && old[first] == now[first]) first++;
        if (first == old.Length) return false;
        while (old[last] == now[last]) last--;
        MetadataEvents.Raise(MetadataEvent.HeaderUpdate, device.Name);
        device.Write(now.AsSpan(first, last - first + 1), first);
        return true;
    }
}
