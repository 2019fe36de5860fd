using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The host file as a block device around the page cache (<c>cache=none</c>, O_DIRECT, Linux):
/// data goes between the caller's memory and the disk, so serving an image does not fill host
/// memory with a second copy of what the guest caches itself. Any request works: one whose offset,
/// length or memory does not meet <see cref="SectorSize"/> and <see cref="MemoryAlignment"/> goes
/// through an aligned pooled buffer, rewriting the partial sectors at its ends (read, modify, write)
/// under a lock that keeps concurrent writes to the same sector from losing each other's bytes.
/// </summary>
/// <remarks>
/// Like <see cref="FileBlockDevice"/>, every operation runs on the calling thread. Flush still
/// fdatasyncs: O_DIRECT bypasses the page cache, not the disk's volatile cache or the file's metadata.
/// The length the device reports stays exact although the disk only writes whole sectors: a write
/// that has to grow the file past its end by a partial sector truncates it back afterwards.
/// </remarks>
public sealed class DirectFileBlockDevice : BlockDevice, IHostFileLayout
{
    private readonly SafeFileHandle _handle;
    private readonly SectorLocks _locks;
    private readonly Lock _extendGate = new();
    private readonly long _sectorMask;
    private readonly long _memoryMask;
    // The file's length as writes and SetLength leave it, changed only under _extendGate: a write that
    // might grow the file takes the gate, so a truncate-back never cuts a concurrent write's bytes.
    private long _length;

    private DirectFileBlockDevice(SafeFileHandle handle, string path, bool readOnly, DirectIoProbe.Alignment alignment)
    {
        _handle = handle;
        Name = path;
        IsReadOnly = readOnly;
        SectorSize = alignment.SectorSize;
        MemoryAlignment = alignment.MemoryAlignment;
        _sectorMask = SectorSize - 1;
        _memoryMask = MemoryAlignment - 1;
        _locks = new SectorLocks(SectorSize);
        _length = RandomAccess.GetLength(handle);
    }

    /// <summary>
    /// Opens an existing file with O_DIRECT; read-only unless <paramref name="writable"/>. Takes no
    /// image lock (as <see cref="FileBlockDevice.Open(string, bool)"/>) and probes the sector size.
    /// </summary>
    /// <exception cref="IOException">The filesystem refuses O_DIRECT (some tmpfs, network and FUSE filesystems): the message names the path and says to use cache=writeback.</exception>
    public static DirectFileBlockDevice Open(string path, bool writable)
    {
        var access = writable ? FileAccess.ReadWrite : FileAccess.Read;
        var handle = File.OpenHandle(path, FileMode.Open, access, FileShare.ReadWrite, FileOptions.RandomAccess);
        try
        {
            // .NET has no FileOptions value for O_DIRECT on Linux; it is set on the open descriptor instead.
            DirectIoProbe.Enable(handle, path);
            return new DirectFileBlockDevice(handle, path, !writable, DirectIoProbe.Probe(handle, path));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The logical sector size: every direct transfer starts and ends on a multiple of it.</summary>
    public int SectorSize { get; }

    /// <summary>The alignment the kernel demands of the memory a direct transfer uses (the sector size); other buffers are bounced.</summary>
    public int MemoryAlignment { get; }

    /// <inheritdoc />
    public override string Name { get; }

    /// <inheritdoc />
    public override bool IsReadOnly { get; }

    /// <inheritdoc />
    /// <remarks>Read-only: the file's length now (another process may be writing it); writable: what this device's writes left.</remarks>
    public override long Length => IsReadOnly ? RandomAccess.GetLength(_handle) : Volatile.Read(ref _length);

    long IHostFileLayout.AllocatedBytes => HostFileHoles.AllocatedBytes(_handle);

    HostFileRun? IHostFileLayout.GetRun(long offset, long length) => HostFileHoles.GetRun(_handle, Length, offset, length);

    /// <inheritdoc />
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        var span = buffer.Span;
        if (!IsReadOnly)
        {
            // Bytes past the length are a sector tail a growing write has not truncated back yet.
            long limit = Volatile.Read(ref _length);
            if (offset >= limit) return new(0);
            if (span.Length > limit - offset) span = span[..(int)(limit - offset)];
        }
        if (span.IsEmpty) return new(0);
        return new(ReadDirectOrBounced(span, offset));
    }

    private unsafe int ReadDirectOrBounced(Span<byte> span, long offset)
    {
        // The check and the transfer under one pin: an unpinned array may move to another alignment between them.
        fixed (byte* p = span)
        {
            if (((offset | (long)span.Length) & _sectorMask) == 0 && ((nuint)p & (nuint)_memoryMask) == 0)
                return RandomAccess.Read(_handle, span, offset);
        }
        return ReadBounced(span, offset);
    }

    private int ReadBounced(Span<byte> destination, long offset)
    {
        int done = 0;
        while (done < destination.Length)
        {
            long pos = offset + done;
            long start = pos & ~_sectorMask;
            int skip = (int)(pos - start);
            int take = Math.Min(destination.Length - done, AlignedBufferPool.MaxBufferSize - skip);
            int span = (int)(AlignUp(pos + take) - start);
            using var bounce = AlignedBufferPool.Rent(span);
            // One pread per piece: O_DIRECT reads come back short only at the end of the file.
            int n = RandomAccess.Read(_handle, bounce.Span[..span], start);
            int got = Math.Clamp(n - skip, 0, take);
            bounce.Span.Slice(skip, got).CopyTo(destination[done..]);
            done += got;
            if (got < take) break;
        }
        return done;
    }

    /// <inheritdoc />
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (IsReadOnly) throw new IOException($"{Name} is open read-only");
        var span = buffer.Span;
        if (span.IsEmpty) return ValueTask.CompletedTask;
        long end = checked(offset + span.Length);
        if (AlignUp(end) <= Volatile.Read(ref _length))
        {
            WriteLocked(span, offset);
            return ValueTask.CompletedTask;
        }
        lock (_extendGate)
        {
            long length = _length;
            WriteLocked(span, offset);
            // The disk wrote the last sector whole, so the file may now end past newLength. It stays
            // padded until Dispose: truncating here would also free the blocks fallocate(KEEP_SIZE)
            // reserved beyond the end (journal and table space), turning a later write into ENOSPC.
            Volatile.Write(ref _length, Math.Max(length, end));
        }
        return ValueTask.CompletedTask;
    }

    private void WriteLocked(ReadOnlySpan<byte> source, long offset)
    {
        long end = offset + source.Length;
        long head = (offset & _sectorMask) != 0 ? offset & ~_sectorMask : -1;
        long tail = (end & _sectorMask) != 0 ? end & ~_sectorMask : -1;
        using var held = _locks.Enter(offset & ~_sectorMask, AlignUp(end), head, tail);
        if (head >= 0 || tail >= 0 || !TryWriteDirect(_handle, source, offset, _memoryMask)) WriteBounced(source, offset);
    }

    /// <summary>
    /// Writes <paramref name="source"/> through the O_DIRECT <paramref name="handle"/> when its memory meets
    /// <paramref name="memoryMask"/> (offset and length are the caller's to check); false, having written nothing, when not.
    /// </summary>
    internal static unsafe bool TryWriteDirect(SafeFileHandle handle, ReadOnlySpan<byte> source, long offset, long memoryMask)
    {
        // The check and the transfer under one pin: an unpinned array could move between them.
        fixed (byte* p = source)
        {
            if (((nuint)p & (nuint)memoryMask) != 0) return false;
            RandomAccess.Write(handle, source, offset);
            return true;
        }
    }

    private void WriteBounced(ReadOnlySpan<byte> source, long offset)
    {
        int done = 0;
        while (done < source.Length)
        {
            long pos = offset + done;
            long start = pos & ~_sectorMask;
            int skip = (int)(pos - start);
            int take = Math.Min(source.Length - done, AlignedBufferPool.MaxBufferSize - skip);
            long end = pos + take;
            int span = (int)(AlignUp(end) - start);
            using var bounce = AlignedBufferPool.Rent(span);
            var block = bounce.Span[..span];
            // Read, modify, write: the partial sectors at the ends keep the bytes this write does not cover.
            if (skip != 0) ReadSector(block[..SectorSize], start);
            if ((end & _sectorMask) != 0 && (span > SectorSize || skip == 0))
                ReadSector(block[(span - SectorSize)..], start + span - SectorSize);
            source.Slice(done, take).CopyTo(block[skip..]);
            RandomAccess.Write(_handle, block, start);
            done += take;
        }
    }

    private void ReadSector(Span<byte> sector, long offset)
    {
        int n = RandomAccess.Read(_handle, sector, offset);
        sector[n..].Clear();
    }

    /// <inheritdoc />
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        if (!IsReadOnly) HostFileCalls.Sync(_handle, Name);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public override void SetLength(long length)
    {
        lock (_extendGate)
        {
            RandomAccess.SetLength(_handle, length);
            Volatile.Write(ref _length, length);
        }
    }

    /// <inheritdoc />
    /// <remarks>fallocate(PUNCH_HOLE|KEEP_SIZE); zeros written through this device where the filesystem cannot punch.</remarks>
    public override void PunchHole(long offset, long length)
    {
        if (length <= 0) return;
        if (!HostFileCalls.TryPunchHole(_handle, Name, offset, length)) ZeroFill.Write(this, offset, length);
    }

    /// <inheritdoc />
    public override bool ReserveSpace(long offset, long length) => HostFileCalls.ReserveSpace(_handle, Name, offset, length);

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        // Give the file its exact length back (see WriteCoreAsync); a crash leaves at most one sector of zeros.
        if (!IsReadOnly && !_handle.IsClosed && RandomAccess.GetLength(_handle) > _length)
            RandomAccess.SetLength(_handle, _length);
        _handle.Dispose();
        _locks.Dispose();
    }

    private long AlignUp(long value) => (value + _sectorMask) & ~_sectorMask;
}
