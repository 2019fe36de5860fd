using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.IO.MemoryMappedFiles;

namespace Qcow2Actors.CrashLab;

/// <summary>
/// A crash log file mapped read-only. Records and their write data are read in place: the kernel pages the file in
/// as the checker walks it and can drop those pages again, so a many-GiB recording costs address space, not memory.
/// </summary>
/// <remarks>
/// The mapping lives as long as anything read from it: every write's data holds this object, whose finalizer lets
/// the mapping go once none is reachable; there is no Dispose that could unmap it under a reader. The length is the
/// file's when it was opened (a recorder still appending adds records this reader does not see). A file cut shorter
/// while it is mapped is not supported: reading past its new end faults.
/// </remarks>
[SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable",
    Justification = "The mapping's lifetime is its readers': released by the finalizer once no record's data is reachable; an explicit dispose could unmap it under a reader.")]
internal sealed unsafe class MappedLogBytes : LogBytes
{
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _start;
    private readonly bool _acquired;

    private MappedLogBytes(MemoryMappedViewAccessor view, long length)
    {
        _view = view;
        Length = length;
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        _acquired = true;
        _start = pointer + view.PointerOffset;
    }

    /// <summary>Maps the file at <paramref name="path"/> as it is now; an empty file is an empty log.</summary>
    public static LogBytes Open(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        for (int attempt = 1; ; attempt++)
        {
            long length = stream.Length;
            if (length == 0) return Of(ReadOnlyMemory<byte>.Empty);
            try
            {
                // A mapping outlives the file handle and the mapping object it was made through: the view alone is kept.
                using var file = MemoryMappedFile.CreateFromFile(stream, null, length, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
                return new MappedLogBytes(file.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read), length);
            }
            catch (ArgumentOutOfRangeException) when (attempt < MapAttempts && stream.Length > length)
            {
                // A recorder appended between the length and the mapping (which must cover the whole file): again.
            }
        }
    }

    /// <summary>Tries at mapping a log a recorder keeps appending to (each can lose a race with an append).</summary>
    private const int MapAttempts = 100;

    public override long Length { get; }

    public override ReadOnlySpan<byte> Span(long offset, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset + length, Length);
        return new ReadOnlySpan<byte>(_start + offset, length);
    }

    public override ReadOnlyMemory<byte> Memory(long offset, int length)
    {
        _ = Span(offset, length); // the range checks
        return new Region(this, offset, length).Memory;
    }

    ~MappedLogBytes()
    {
        // The view's handle unmaps once its last hold is gone: this pointer's, and its own at its finalizer.
        if (_acquired) _view.SafeMemoryMappedViewHandle.ReleasePointer();
    }

    /// <summary>
    /// One record's data in the mapping; holds the mapping alive while the data is. The pages are read-only: the
    /// span is writable only because MemoryManager's is (nothing here writes to a record's data).
    /// </summary>
    private sealed class Region(MappedLogBytes owner, long offset, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(owner._start + offset, length);

        // Mapped memory never moves: nothing to pin.
        public override MemoryHandle Pin(int elementIndex = 0)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, length);
            return new(owner._start + offset + elementIndex, default, this);
        }

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing)
        {
        }
    }
}
