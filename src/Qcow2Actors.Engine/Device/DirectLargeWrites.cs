using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The O_DIRECT side door of a <see cref="FileBlockDevice"/> (<c>cache=writeback</c>): a write of at least
/// <see cref="Threshold"/> bytes whose offset and length are whole sectors goes to the disk through a
/// second handle with O_DIRECT instead of through the page cache. Durability is unchanged (the write is
/// as volatile as a buffered one until the device's flush fdatasyncs the file); only where the bytes pass
/// differs.
/// </summary>
/// <remarks>
/// Why: a buffered 1 MiB write copies into page-cache pages the kernel must first allocate. On a guest
/// whose host takes back free memory (DAMON reclaim, free page reporting), those pages come back
/// one host fault at a time and the copy into them ran at ~1 GB/s: 1.6-2.9 ms of server CPU per 1 MiB
/// write, against ~0.7 ms direct (bench/results/seqwrite-slowmode-2026-12-01.md). Streaming writes
/// also have no use for the cache: nothing reads them back soon, and the guest caches what it reads.
/// Small writes stay buffered (the page cache absorbs them, and a 4 KiB O_DIRECT write would make the
/// caller wait for the disk). The kernel keeps the two paths coherent: a direct write first writes back
/// and drops cached pages of its range. Memory that is not sector-aligned goes through a pooled aligned
/// buffer (a warm copy, far cheaper than filling fresh page-cache pages). A filesystem that refuses
/// O_DIRECT turns this off for the device for good; so does <c>Q2A_DIRECT_LARGE_WRITES=0</c>.
/// </remarks>
internal sealed class DirectLargeWrites : IDisposable
{
    /// <summary>Smallest write that bypasses the page cache.</summary>
    public const int Threshold = 256 * 1024;

    private static readonly bool Disabled = Environment.GetEnvironmentVariable("Q2A_DIRECT_LARGE_WRITES") == "0";

    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly Lock _gate = new();
    // Null until the first large write opens it; _unavailable after a refusal or Dispose.
    private SafeFileHandle? _handle;
    private bool _unavailable = Disabled || !OperatingSystem.IsLinux();
    private long _sectorMask;
    private long _memoryMask;

    /// <param name="file">The device's own handle; the direct handle is a second one on the same file.</param>
    /// <param name="path">The file's name, for messages.</param>
    public DirectLargeWrites(SafeFileHandle file, string path)
    {
        _file = file;
        _path = path;
    }

    /// <summary>
    /// Writes <paramref name="source"/> at <paramref name="offset"/> with O_DIRECT and returns true, or returns
    /// false having written nothing (too small, not whole sectors, or no O_DIRECT here): the caller writes it buffered.
    /// </summary>
    public bool TryWrite(ReadOnlySpan<byte> source, long offset)
    {
        if (source.Length < Threshold || Volatile.Read(ref _unavailable)) return false;
        if (Volatile.Read(ref _handle) is null && !TryOpen()) return false;
        var handle = _handle!;
        if (((offset | (long)source.Length) & _sectorMask) != 0) return false;
        if (!DirectFileBlockDevice.TryWriteDirect(handle, source, offset, _memoryMask)) WriteBounced(handle, source, offset);
        return true;
    }

    private bool TryOpen()
    {
        lock (_gate)
        {
            if (_handle is not null || _unavailable) return _handle is not null;
            SafeFileHandle? handle = null;
            try
            {
                // The file the device has open, not whatever its path names now (HostFileCalls.Reopen says why).
                handle = HostFileCalls.Reopen(_file, FileAccess.ReadWrite, FileOptions.RandomAccess);
                DirectIoProbe.Enable(handle, _path);
                var alignment = DirectIoProbe.Probe(handle, _path);
                _sectorMask = alignment.SectorSize - 1;
                _memoryMask = alignment.MemoryAlignment - 1;
                Volatile.Write(ref _handle, handle);
                handle = null;
                return true;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
            {
                // No O_DIRECT on this filesystem (or the file cannot be reopened): every write stays buffered.
                Volatile.Write(ref _unavailable, true);
                return false;
            }
            finally
            {
                handle?.Dispose();
            }
        }
    }

    private static void WriteBounced(SafeFileHandle handle, ReadOnlySpan<byte> source, long offset)
    {
        // Offset and length are whole sectors, so every piece is too: no read-modify-write.
        for (int done = 0; done < source.Length;)
        {
            int take = Math.Min(source.Length - done, AlignedBufferPool.MaxBufferSize);
            using var bounce = AlignedBufferPool.Rent(take);
            var block = bounce.Span[..take];
            source.Slice(done, take).CopyTo(block);
            RandomAccess.Write(handle, block, offset + done);
            done += take;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _handle?.Dispose();
            _unavailable = true;
        }
    }
}
