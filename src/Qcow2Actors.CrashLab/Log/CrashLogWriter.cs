using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.CrashLab;

/// <summary>
/// Appends a crash log: append-only and thread-safe. Every record carries an XxHash64 checksum, so a reader stops
/// at the first torn or bad record and reports the log as truncated there (the log survives its own crash).
/// </summary>
public sealed class CrashLogWriter : IAsyncDisposable
{
    private readonly Lock _gate = new();
    private readonly SafeFileHandle _handle;
    private readonly string _path;
    private long _position;
    private long _lastId;
    private bool _disposed;

    private CrashLogWriter(string path, SafeFileHandle handle, long position)
    {
        _path = path;
        _handle = handle;
        _position = position;
    }

    /// <summary>Path of the log file.</summary>
    public string Path => _path;

    /// <summary>Creates the log and writes its header; refuses an existing file (IOException naming the path).</summary>
    public static CrashLogWriter Create(string path, CrashLogHeader header)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(header);
        if (File.Exists(path) || Directory.Exists(path))
            throw new IOException($"crash log {path} already exists; choose a new path (a log is never appended to).");

        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
        }
        catch (IOException e) when (File.Exists(path))
        {
            throw new IOException($"crash log {path} already exists; choose a new path (a log is never appended to).", e);
        }

        try
        {
            var bytes = EncodeHeader(header);
            RandomAccess.Write(handle, bytes, 0);
            return new CrashLogWriter(path, handle, bytes.Length);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Appends a WRITE (with its data) before it is issued to the image; returns its id.</summary>
    public long BeginWrite(long offset, ReadOnlySpan<byte> data, bool fua)
    {
        if (data.Length > CrashLogRecordLayout.MaxDataLength)
            throw new ArgumentOutOfRangeException(nameof(data), $"a write of {data.Length} bytes is larger than a crash log record holds ({CrashLogRecordLayout.MaxDataLength}).");
        return AppendBegin(CrashLogRecordKind.Write, offset, data.Length, data, fua ? CrashLogRecordLayout.FlagFua : (byte)0);
    }

    /// <summary>Appends a WRITE_ZEROES before it is issued to the image; returns its id.</summary>
    public long BeginWriteZeroes(long offset, long length, bool mayUnmap, bool fua)
    {
        var flags = (byte)((fua ? CrashLogRecordLayout.FlagFua : 0) | (mayUnmap ? CrashLogRecordLayout.FlagMayUnmap : 0));
        return AppendBegin(CrashLogRecordKind.WriteZeroes, offset, length, default, flags);
    }

    /// <summary>Appends a TRIM before it is issued to the image; returns its id.</summary>
    public long BeginTrim(long offset, long length, bool fua) =>
        AppendBegin(CrashLogRecordKind.Trim, offset, length, default, fua ? CrashLogRecordLayout.FlagFua : (byte)0);

    /// <summary>Appends a FLUSH before it is issued to the image; returns its id.</summary>
    public long BeginFlush() => AppendBegin(CrashLogRecordKind.Flush, 0, 0, default, 0);

    /// <summary>
    /// Appends the completion of <paramref name="id"/> after the image finished it and before the reply goes to the
    /// client (so "acknowledged" implies "completed in the log"); <paramref name="ok"/> is false when it failed.
    /// </summary>
    public void Complete(long id, bool ok)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (id <= 0 || id > _lastId)
                throw new ArgumentOutOfRangeException(nameof(id), $"crash log {_path}: no operation with id {id} was begun.");
            Append(CrashLogRecordKind.Complete, id, 0, 0, default, ok ? CrashLogRecordLayout.FlagOk : (byte)0);
        }
    }

    /// <summary>Makes everything appended so far durable (fdatasync) before the caller acknowledges a flush or FUA.</summary>
    public ValueTask FlushAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
            ObjectDisposedException.ThrowIf(_disposed, this);
        // Outside the lock: appends may go on while the kernel writes back what came before them.
        RandomAccess.FlushToDisk(_handle);
        return ValueTask.CompletedTask;
    }

    /// <summary>Makes the log durable and closes it.</summary>
    public ValueTask DisposeAsync()
    {
        lock (_gate)
        {
            if (_disposed)
                return ValueTask.CompletedTask;
            _disposed = true;
        }

        try
        {
            RandomAccess.FlushToDisk(_handle);
        }
        finally
        {
            _handle.Dispose();
        }

        return ValueTask.CompletedTask;
    }

    private long AppendBegin(CrashLogRecordKind kind, long offset, long length, ReadOnlySpan<byte> data, byte flags)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var id = _lastId + 1;
            Append(kind, id, offset, length, data, flags);
            _lastId = id;
            return id;
        }
    }

    // Caller holds _gate: record order in the file is the order of the calls.
    private void Append(CrashLogRecordKind kind, long id, long offset, long length, ReadOnlySpan<byte> data, byte flags)
    {
        var total = CrashLogRecordLayout.FixedLength + data.Length + CrashLogRecordLayout.ChecksumLength;
        var buffer = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            var span = buffer.AsSpan(0, total);
            span.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(span[CrashLogRecordLayout.RecordLengthOffset..], (uint)total);
            span[CrashLogRecordLayout.KindOffset] = (byte)kind;
            span[CrashLogRecordLayout.FlagsOffset] = flags;
            BinaryPrimitives.WriteInt64LittleEndian(span[CrashLogRecordLayout.IdOffset..], id);
            BinaryPrimitives.WriteInt64LittleEndian(span[CrashLogRecordLayout.OffsetOffset..], offset);
            BinaryPrimitives.WriteInt64LittleEndian(span[CrashLogRecordLayout.LengthOffset..], length);
            data.CopyTo(span[CrashLogRecordLayout.FixedLength..]);
            var body = span[..(total - CrashLogRecordLayout.ChecksumLength)];
            BinaryPrimitives.WriteUInt64LittleEndian(span[body.Length..], XxHash64.HashToUInt64(body));
            RandomAccess.Write(_handle, span, _position);
            _position += total;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    internal static byte[] EncodeHeader(CrashLogHeader header)
    {
        var path = Encoding.UTF8.GetBytes(header.ImagePath);
        var snapshot = Encoding.UTF8.GetBytes(header.BaseSnapshot);
        if (path.Length > CrashLogHeaderLayout.MaxStringLength || snapshot.Length > CrashLogHeaderLayout.MaxStringLength)
            throw new ArgumentException($"crash log header: image path or snapshot name longer than {CrashLogHeaderLayout.MaxStringLength} bytes.", nameof(header));
        var total = CrashLogHeaderLayout.FixedLength + path.Length + snapshot.Length + CrashLogHeaderLayout.ChecksumLength;
        var bytes = new byte[total];
        var span = bytes.AsSpan();
        CrashLogHeaderLayout.Magic.CopyTo(span[CrashLogHeaderLayout.MagicOffset..]);
        BinaryPrimitives.WriteUInt32LittleEndian(span[CrashLogHeaderLayout.VersionOffset..], CrashLogHeaderLayout.CurrentVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(span[CrashLogHeaderLayout.HeaderLengthOffset..], (uint)total);
        BinaryPrimitives.WriteInt64LittleEndian(span[CrashLogHeaderLayout.VirtualSizeOffset..], header.VirtualSize);
        BinaryPrimitives.WriteInt64LittleEndian(span[CrashLogHeaderLayout.StartedOffset..], header.Started.ToUnixTimeMilliseconds());
        BinaryPrimitives.WriteUInt32LittleEndian(span[CrashLogHeaderLayout.PathLengthOffset..], (uint)path.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(span[CrashLogHeaderLayout.SnapshotLengthOffset..], (uint)snapshot.Length);
        path.CopyTo(span[CrashLogHeaderLayout.FixedLength..]);
        snapshot.CopyTo(span[(CrashLogHeaderLayout.FixedLength + path.Length)..]);
        var body = span[..(total - CrashLogHeaderLayout.ChecksumLength)];
        BinaryPrimitives.WriteUInt64LittleEndian(span[body.Length..], XxHash64.HashToUInt64(body));
        return bytes;
    }
}
