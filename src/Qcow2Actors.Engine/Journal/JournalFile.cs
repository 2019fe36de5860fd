using System.Buffers;
using System.Buffers.Binary;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// One persistence id's append-only journal file (format in <see cref="JournalRecords"/>).
/// Not thread-safe: <see cref="FileJournal"/> serializes every call on one file under its lock.
/// The file is scanned once on first use; the scan keeps an index of good records and stops
/// at the first bad one (short, bad length, bad CRC), whose bytes and everything after are
/// dropped: cut off by the next append, left out of a compaction.
/// </summary>
internal sealed class JournalFile : IDisposable
{
    private readonly int _maxRecordLength;
    private readonly Func<string, IBlockDevice> _openExisting;
    private readonly Func<string, IBlockDevice> _createNew;
    private readonly List<RecordRef> _index = [];
    private IBlockDevice? _device;
    // QEMU-style write lock on the journal file, held as long as _device is open (it follows the
    // inode through a compaction's rename). The image's own write lock is what keeps a second
    // writer out; this one makes the journal show as in use to anyone who looks at it.
    private ImageLock? _lock;
    private readonly bool _takeLock;
    private bool _loaded;
    private bool _directorySynced;
    private Exception? _broken;
    private readonly JournalReservation? _reservation;
    // End of the space allocated ahead of GoodEnd (fallocate KEEP_SIZE); GoodEnd when none is.
    private long _reservedEnd;

    // takeLock is false for a read-only replay of a pending journal: it writes nothing, and the
    // image's own lock (a reader's, or -U's beside a live writer that holds this file's write lock) governs it.
    public JournalFile(string path, int maxRecordLength,
        Func<string, IBlockDevice>? openExisting = null, Func<string, IBlockDevice>? createNew = null,
        JournalReservation? reservation = null, bool takeLock = true)
    {
        Path = System.IO.Path.GetFullPath(path);
        _takeLock = takeLock;
        _maxRecordLength = maxRecordLength;
        _openExisting = openExisting ?? (p => FileBlockDevice.Open(p, writable: true));
        _createNew = createNew ?? (p => FileBlockDevice.Create(p, overwrite: true));
        _reservation = reservation;
    }

    /// <summary>
    /// Allocates the file's space up to <paramref name="end"/> without changing its length, creating
    /// the file if it does not exist yet (an empty file reads as an empty journal). Caller holds the lock.
    /// </summary>
    /// <exception cref="Qcow2NoSpaceException">The disk is full.</exception>
    public void Reserve(long end)
    {
        EnsureLoaded();
        if (end <= _reservedEnd) return;
        var device = _device ??= CreateDevice();
        long from = Math.Max(GoodEnd, _reservedEnd);
        if (!device.ReserveSpace(from, end - from))
        {
            _reservation?.MarkUnsupported();
            return;
        }
        _reservedEnd = end;
        _reservation?.Update(GoodEnd, _reservedEnd);
    }

    private IBlockDevice CreateDevice()
    {
        var dir = System.IO.Path.GetDirectoryName(Path)!;
        if (!Directory.Exists(dir))
        {
            Directory.CreateDirectory(dir);
            DirectorySync.FsyncParentOf(dir);
        }
        // Not yet durable by name: the first append fsyncs the directory before it acknowledges.
        _directorySynced = false;
        var device = _createNew(Path);
        try
        {
            _lock = LockIfOnDisk(Path);
        }
        catch
        {
            device.Dispose();
            throw;
        }
        return device;
    }

    public string Path { get; }

    /// <summary>End of the last good record: where the next append goes (0 = no valid magic yet).</summary>
    public long GoodEnd { get; private set; }

    /// <summary>Bytes after <see cref="GoodEnd"/> that the last scan found unusable.</summary>
    public long DroppedBytes { get; private set; }

    public long HighestSequenceNr { get; private set; }

    public long DeletedTo { get; private set; }

    /// <summary>Scans the file once; true when this call did the scan. Creates nothing.</summary>
    public bool EnsureLoaded()
    {
        ThrowIfBroken();
        if (_loaded) return false;
        _index.Clear();
        GoodEnd = 0;
        DroppedBytes = 0;
        HighestSequenceNr = 0;
        DeletedTo = 0;
        if (File.Exists(Path))
        {
            _device = _openExisting(Path);
            try
            {
                _lock = LockIfOnDisk(Path);
            }
            catch
            {
                _device.Dispose();
                _device = null;
                throw;
            }
            Scan(_device);
        }
        _loaded = true;
        _reservedEnd = GoodEnd;
        _reservation?.Attach(this);
        _reservation?.Update(GoodEnd, _reservedEnd);
        return true;
    }

    private void Scan(IBlockDevice device)
    {
        var length = device.Length;
        Span<byte> head = stackalloc byte[JournalRecords.FrameHeaderLength];
        var n = device.Read(head, 0);
        var magic = JournalRecords.Magic;
        if (!magic.StartsWith(head[..Math.Min(n, magic.Length)]))
            throw new InvalidDataException($"{Path} is not a qcow2actors journal (bad magic)");
        if (n < magic.Length)
        {
            // A crash while the file was being created: treat it as empty.
            DroppedBytes = length;
            return;
        }
        long pos = magic.Length;
        var buffer = ArrayPool<byte>.Shared.Rent(4096);
        try
        {
            while (true)
            {
                if (device.Read(head, pos) < JournalRecords.FrameHeaderLength) break;
                var payloadLength = BinaryPrimitives.ReadUInt32LittleEndian(head);
                if (payloadLength < JournalRecords.DeleteMarkLength || payloadLength > _maxRecordLength
                    || pos + JournalRecords.FrameHeaderLength + payloadLength > length) break;
                var len = (int)payloadLength;
                if (buffer.Length < len)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = ArrayPool<byte>.Shared.Rent(len);
                }
                if (device.Read(buffer.AsSpan(0, len), pos + JournalRecords.FrameHeaderLength) < len) break;
                var payload = buffer.AsSpan(0, len);
                if (JournalRecords.Checksum(head[..4], payload) != BinaryPrimitives.ReadUInt32LittleEndian(head[4..])) break;
                if (!Apply(payload, pos)) break;
                pos += JournalRecords.FrameHeaderLength + len;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        GoodEnd = pos;
        DroppedBytes = length - pos;
    }

    /// <summary>Folds one verified record into the index; false if its content makes no sense (treated as corrupt).</summary>
    private bool Apply(ReadOnlySpan<byte> payload, long offset)
    {
        switch (payload[0])
        {
            case JournalRecords.EventsKind when payload.Length >= JournalRecords.EventsHeaderLength:
                var first = BinaryPrimitives.ReadInt64LittleEndian(payload[1..]);
                var last = BinaryPrimitives.ReadInt64LittleEndian(payload[9..]);
                if (first <= 0 || last < first) return false;
                _index.Add(new RecordRef(offset, payload.Length, first, last));
                HighestSequenceNr = Math.Max(HighestSequenceNr, last);
                return true;
            case JournalRecords.DeleteMarkKind when payload.Length == JournalRecords.DeleteMarkLength:
                DeletedTo = Math.Max(DeletedTo, BinaryPrimitives.ReadInt64LittleEndian(payload[1..]));
                HighestSequenceNr = Math.Max(HighestSequenceNr, BinaryPrimitives.ReadInt64LittleEndian(payload[9..]));
                return true;
            default:
                return false;
        }
    }

    /// <summary>
    /// Appends one record per write (each write = one AtomicWrite, in sequence order) and makes
    /// them durable with one fdatasync: one call is one group commit.
    /// </summary>
    public void Append(IReadOnlyList<IReadOnlyList<StoredEvent>> writes)
    {
        EnsureLoaded();
        if (writes.Count == 0) return;
        var start = GoodEnd;
        long length = start == 0 ? JournalRecords.Magic.Length : 0;
        var added = new List<RecordRef>(writes.Count);
        foreach (var events in writes)
        {
            var payloadLength = JournalRecords.EventsPayloadLength(events);
            if (payloadLength > _maxRecordLength)
                throw new InvalidOperationException($"journal record of {payloadLength} bytes exceeds max-record-size {_maxRecordLength}");
            added.Add(new RecordRef(start + length, (int)payloadLength, events[0].SequenceNr, events[^1].SequenceNr));
            length += JournalRecords.FrameHeaderLength + payloadLength;
        }

        _device ??= CreateDevice();
        WriteDurably(start, length, output =>
        {
            if (start == 0) output.Write(JournalRecords.Magic);
            for (int i = 0; i < writes.Count; i++) JournalRecords.WriteEvents(output, writes[i], added[i].Length);
        });
        GoodEnd = start + length;
        DroppedBytes = 0;
        _index.AddRange(added);
        HighestSequenceNr = Math.Max(HighestSequenceNr, added[^1].Last);
        _reservedEnd = Math.Max(_reservedEnd, GoodEnd);
        _reservation?.Update(GoodEnd, _reservedEnd);
        _reservation?.Appended(length);
    }

    /// <summary>Delivers stored events with from ≤ seq ≤ to, skipping deleted ones, at most <paramref name="max"/>.</summary>
    public void Replay(long from, long to, long max, Action<StoredEvent> deliver)
    {
        EnsureLoaded();
        if (max <= 0 || _device is null) return;
        var start = Math.Max(from, DeletedTo + 1);
        long delivered = 0;
        foreach (var rec in _index)
        {
            if (rec.Last < start || rec.First > to) continue;
            var payload = ArrayPool<byte>.Shared.Rent(rec.Length);
            try
            {
                if (_device.Read(payload.AsSpan(0, rec.Length), rec.Offset + JournalRecords.FrameHeaderLength) < rec.Length)
                    throw new IOException($"{Path}: record at {rec.Offset} is shorter than when the journal was scanned");
                foreach (var e in JournalRecords.ReadEvents(payload, rec.Length))
                {
                    if (e.SequenceNr < start || e.SequenceNr > to) continue;
                    deliver(e);
                    if (++delivered >= max) return;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(payload);
            }
        }
    }

    /// <summary>
    /// Deletes events up to <paramref name="toSequenceNr"/> (capped at the highest stored):
    /// writes a compacted copy (magic, deletion mark, surviving records) to a temp file,
    /// fdatasyncs it, renames it over the journal and fsyncs the directory. The rename is
    /// atomic, so a crash leaves either the old file or the new one. When everything is
    /// deleted the new file holds only the mark, which keeps the highest sequence number.
    /// </summary>
    public void DeleteTo(long toSequenceNr)
    {
        EnsureLoaded();
        var deletedTo = Math.Min(toSequenceNr, HighestSequenceNr);
        if (deletedTo <= DeletedTo || _device is null) return;

        var temp = Path + ".compact";
        var newIndex = new List<RecordRef>();
        IBlockDevice? compacted = null;
        ImageLock? compactedLock = null;
        try
        {
            compacted = _createNew(temp);
            compactedLock = LockIfOnDisk(temp);
            var head = new ArrayBufferWriter<byte>();
            head.Write(JournalRecords.Magic);
            JournalRecords.WriteDeleteMark(head, deletedTo, HighestSequenceNr);
            compacted.Write(head.WrittenSpan, 0);
            long pos = head.WrittenCount;
            foreach (var rec in _index)
            {
                if (rec.Last <= deletedTo) continue;
                var frameLength = JournalRecords.FrameHeaderLength + rec.Length;
                var frame = ArrayPool<byte>.Shared.Rent(frameLength);
                try
                {
                    if (_device.Read(frame.AsSpan(0, frameLength), rec.Offset) < frameLength)
                        throw new IOException($"{Path}: record at {rec.Offset} is shorter than when the journal was scanned");
                    compacted.Write(frame.AsSpan(0, frameLength), pos);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(frame);
                }
                newIndex.Add(rec with { Offset = pos });
                pos += frameLength;
            }
            compacted.Flush();
            File.Move(temp, Path, overwrite: true);
            GoodEnd = pos;
        }
        catch (Exception e)
        {
            compacted?.Dispose();
            compactedLock?.Dispose();
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            if (!Qcow2NoSpaceException.IsNoSpace(e)) throw;
            // A full disk has no room for the compacted copy: mark the events deleted in place
            // instead, in the space reserved past the end; the next compaction shrinks the file.
            AppendDeleteMark(deletedTo);
            return;
        }
        try
        {
            DirectorySync.FsyncParentOf(Path);
        }
        catch (Exception e)
        {
            _broken = e;
            throw;
        }
        // The open handle follows the inode, so the compacted device now is the journal.
        _device.Dispose();
        _device = compacted;
        _lock?.Dispose();
        _lock = compactedLock;
        _index.Clear();
        _index.AddRange(newIndex);
        DeletedTo = deletedTo;
        DroppedBytes = 0;
        _directorySynced = true;
        // The old file's reserved space went with it.
        _reservedEnd = GoodEnd;
        _reservation?.Update(GoodEnd, _reservedEnd);
    }

    private void AppendDeleteMark(long deletedTo)
    {
        var mark = new ArrayBufferWriter<byte>();
        JournalRecords.WriteDeleteMark(mark, deletedTo, HighestSequenceNr);
        var start = GoodEnd;
        WriteDurably(start, mark.WrittenCount, output => output.Write(mark.WrittenSpan));
        GoodEnd = start + mark.WrittenCount;
        DeletedTo = deletedTo;
        DroppedBytes = 0;
        _reservedEnd = Math.Max(_reservedEnd, GoodEnd);
        _reservation?.Update(GoodEnd, _reservedEnd);
    }

    /// <summary>
    /// Has <paramref name="write"/> write <paramref name="length"/> bytes at the append position <paramref name="start"/>
    /// of the open device, and makes them durable.
    /// </summary>
    private void WriteDurably(long start, long length, Action<JournalAppendWriter> write)
    {
        var device = _device!;
        // Cut a torn or corrupt tail first so that no stale bytes follow the new records (the
        // truncation also frees whatever was reserved past it).
        if (device.Length > start)
        {
            device.SetLength(start);
            _reservedEnd = start;
        }
        var output = new JournalAppendWriter(device, start, length);
        write(output);
        output.Complete();
        if (output.Written != length)
            throw new InvalidOperationException($"{Path}: an append wrote {output.Written} bytes where {length} were counted");
        try
        {
            device.Flush();
            // A new file is durable only once its directory entry is. Done on the first write
            // of every open, not only on creation: a process that created the file may have
            // crashed before its directory fsync, and our acknowledgements must not depend on that.
            // (CreateDevice clears the flag, so a file created here is covered too.)
            if (!_directorySynced)
            {
                DirectorySync.FsyncParentOf(Path);
                _directorySynced = true;
            }
        }
        catch (Exception e)
        {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing read
            // back from this file can be trusted to be on disk, so it stays failed until reopened.
            _broken = e;
            throw;
        }
    }

    /// <summary>Closes the file; the next call reopens and rescans it.</summary>
    public void Dispose()
    {
        _reservation?.Attach(null);
        _device?.Dispose();
        _device = null;
        _lock?.Dispose();
        _lock = null;
        _loaded = false;
        _directorySynced = false;
        _broken = null;
    }

    // Test doubles may open devices that are not host files: those have nothing to lock.
    private ImageLock? LockIfOnDisk(string path) => _takeLock && File.Exists(path) ? ImageLock.Acquire(path, LockMode.Writer) : null;

    private void ThrowIfBroken()
    {
        if (_broken is { } e)
            throw new IOException($"journal {Path} is unusable after an earlier failure ({e.Message}); reopen it to recover", e);
    }

    private readonly record struct RecordRef(long Offset, int Length, long First, long Last);
}
