using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace Qcow2Actors.CrashLab;

/// <summary>
/// Reads a crash log: the header must be whole (else <see cref="InvalidDataException"/> naming the file and field);
/// records are read up to the first torn, corrupt or inconsistent one, where the log is reported truncated.
/// </summary>
public static class CrashLogReader
{
    /// <summary>Reads the log at <paramref name="path"/> (it may still be being appended to).</summary>
    public static CrashLog Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"crash log {path} does not exist.", path);
        // Mapped, not read into an array: a recording of a real workload runs to many GiB.
        return Parse(path, MappedLogBytes.Open(path));
    }

    /// <summary>Decodes a log held in memory; <paramref name="name"/> names it in errors.</summary>
    public static CrashLog Parse(string name, ReadOnlyMemory<byte> file) => Parse(name, LogBytes.Of(file));

    private static CrashLog Parse(string name, LogBytes file)
    {
        var header = ParseHeader(name, file.UpTo(0, MaxHeaderLength), out var headerLength);
        var records = new List<CrashLogRecord>();
        var begun = new HashSet<long>();
        var completed = new HashSet<long>();
        long lastId = 0;
        long position = headerLength;
        string? truncation = null;
        while (position < file.Length)
        {
            var reason = TryReadRecord(file, position, records.Count, out var record);
            if (reason is null)
                reason = Validate(record!, begun, completed, lastId);
            if (reason is not null)
            {
                truncation = $"crash log {name}: truncated at offset {position} (record {records.Count}): {reason}";
                break;
            }

            if (record!.Kind == CrashLogRecordKind.Complete)
                completed.Add(record.Id);
            else
            {
                begun.Add(record.Id);
                lastId = record.Id;
            }

            records.Add(record);
            position += CrashLogRecordLayout.FixedLength + record.Data.Length + CrashLogRecordLayout.ChecksumLength;
        }

        return new CrashLog(header, records, position, truncation);
    }

    private const int MaxHeaderLength = CrashLogHeaderLayout.FixedLength + 2 * CrashLogHeaderLayout.MaxStringLength + CrashLogHeaderLayout.ChecksumLength;

    private const int MaxRecordLength = CrashLogRecordLayout.FixedLength + CrashLogRecordLayout.MaxDataLength + CrashLogRecordLayout.ChecksumLength;

    private static CrashLogHeader ParseHeader(string name, ReadOnlySpan<byte> file, out int length)
    {
        if (file.Length < CrashLogHeaderLayout.FixedLength + CrashLogHeaderLayout.ChecksumLength
            || !file[..CrashLogHeaderLayout.Magic.Length].SequenceEqual(CrashLogHeaderLayout.Magic))
            throw new InvalidDataException($"crash log {name}: not a crash log (magic at offset {CrashLogHeaderLayout.MagicOffset} is not Q2ACRLOG or the file is shorter than a header).");
        var version = BinaryPrimitives.ReadUInt32LittleEndian(file[CrashLogHeaderLayout.VersionOffset..]);
        if (version != CrashLogHeaderLayout.CurrentVersion)
            throw new InvalidDataException($"crash log {name}: version {version} at offset {CrashLogHeaderLayout.VersionOffset} is not supported (this build reads version {CrashLogHeaderLayout.CurrentVersion}).");
        var pathLength = BinaryPrimitives.ReadUInt32LittleEndian(file[CrashLogHeaderLayout.PathLengthOffset..]);
        var snapshotLength = BinaryPrimitives.ReadUInt32LittleEndian(file[CrashLogHeaderLayout.SnapshotLengthOffset..]);
        var headerLength = BinaryPrimitives.ReadUInt32LittleEndian(file[CrashLogHeaderLayout.HeaderLengthOffset..]);
        if (pathLength > CrashLogHeaderLayout.MaxStringLength || snapshotLength > CrashLogHeaderLayout.MaxStringLength
            || headerLength != CrashLogHeaderLayout.FixedLength + pathLength + snapshotLength + CrashLogHeaderLayout.ChecksumLength
            || headerLength > file.Length)
            throw new InvalidDataException($"crash log {name}: header length {headerLength} at offset {CrashLogHeaderLayout.HeaderLengthOffset} does not match its path and snapshot lengths or the file is cut short.");
        length = (int)headerLength;
        var body = file[..(length - CrashLogHeaderLayout.ChecksumLength)];
        if (BinaryPrimitives.ReadUInt64LittleEndian(file[body.Length..]) != XxHash64.HashToUInt64(body))
            throw new InvalidDataException($"crash log {name}: header checksum at offset {body.Length} does not match.");
        var virtualSize = BinaryPrimitives.ReadInt64LittleEndian(file[CrashLogHeaderLayout.VirtualSizeOffset..]);
        if (virtualSize <= 0)
            throw new InvalidDataException($"crash log {name}: virtual size {virtualSize} at offset {CrashLogHeaderLayout.VirtualSizeOffset} is not positive.");
        var started = DateTimeOffset.FromUnixTimeMilliseconds(BinaryPrimitives.ReadInt64LittleEndian(file[CrashLogHeaderLayout.StartedOffset..]));
        var path = Encoding.UTF8.GetString(file.Slice(CrashLogHeaderLayout.FixedLength, (int)pathLength));
        var snapshot = Encoding.UTF8.GetString(file.Slice(CrashLogHeaderLayout.FixedLength + (int)pathLength, (int)snapshotLength));
        return new CrashLogHeader(path, snapshot, virtualSize, started);
    }

    private static string? TryReadRecord(LogBytes file, long position, int index, out CrashLogRecord? record)
    {
        record = null;
        // At most one record's worth: the rest of a large log is not looked at (nor paged in) for this one.
        var rest = file.UpTo(position, MaxRecordLength);
        if (rest.Length < CrashLogRecordLayout.FixedLength + CrashLogRecordLayout.ChecksumLength)
            return $"{rest.Length} bytes left, shorter than a record";
        var total = BinaryPrimitives.ReadUInt32LittleEndian(rest[CrashLogRecordLayout.RecordLengthOffset..]);
        if (total < CrashLogRecordLayout.FixedLength + CrashLogRecordLayout.ChecksumLength
            || total > MaxRecordLength)
            return $"record length {total} is not possible";
        if (total > rest.Length)
            return $"record length {total} runs past the end of the file ({rest.Length} bytes left)";
        var body = rest[..((int)total - CrashLogRecordLayout.ChecksumLength)];
        if (BinaryPrimitives.ReadUInt64LittleEndian(rest[body.Length..]) != XxHash64.HashToUInt64(body))
            return "checksum does not match";

        var kind = (CrashLogRecordKind)rest[CrashLogRecordLayout.KindOffset];
        var flags = rest[CrashLogRecordLayout.FlagsOffset];
        var id = BinaryPrimitives.ReadInt64LittleEndian(rest[CrashLogRecordLayout.IdOffset..]);
        var offset = BinaryPrimitives.ReadInt64LittleEndian(rest[CrashLogRecordLayout.OffsetOffset..]);
        var length = BinaryPrimitives.ReadInt64LittleEndian(rest[CrashLogRecordLayout.LengthOffset..]);
        var dataLength = (int)total - CrashLogRecordLayout.FixedLength - CrashLogRecordLayout.ChecksumLength;
        if (!Enum.IsDefined(kind))
            return $"unknown record kind {(byte)kind}";
        if (offset < 0 || length < 0)
            return $"negative offset {offset} or length {length}";
        if (kind == CrashLogRecordKind.Write ? dataLength != length : dataLength != 0)
            return $"a {kind} record carries {dataLength} data bytes for length {length}";
        record = new CrashLogRecord(index, position, kind, id, offset, length,
            file.Memory(position + CrashLogRecordLayout.FixedLength, dataLength),
            (flags & CrashLogRecordLayout.FlagFua) != 0,
            (flags & CrashLogRecordLayout.FlagMayUnmap) != 0,
            (flags & CrashLogRecordLayout.FlagOk) != 0);
        return null;
    }

    private static string? Validate(CrashLogRecord record, HashSet<long> begun, HashSet<long> completed, long lastId)
    {
        if (record.Kind == CrashLogRecordKind.Complete)
        {
            if (!begun.Contains(record.Id))
                return $"completion of id {record.Id}, which was never begun";
            if (completed.Contains(record.Id))
                return $"second completion of id {record.Id}";
            return null;
        }

        return record.Id == lastId + 1 ? null : $"id {record.Id} where {lastId + 1} was next";
    }
}
