namespace Qcow2Actors.CrashLab;

/// <summary>A crash log as read back: its header, every whole record up to the first torn or corrupt one, and the
/// operations those records describe.</summary>
public sealed class CrashLog
{
    internal CrashLog(CrashLogHeader header, IReadOnlyList<CrashLogRecord> records, long validLength, string? truncation)
    {
        Header = header;
        Records = records;
        ValidLength = validLength;
        Truncation = truncation;
        Operations = JoinOperations(records);
    }

    /// <summary>The header written when recording started.</summary>
    public CrashLogHeader Header { get; }

    /// <summary>Every whole record in file order.</summary>
    public IReadOnlyList<CrashLogRecord> Records { get; }

    /// <summary>Operations (writes, zeroes, trims, flushes) in the order they were issued, with their completion.</summary>
    public IReadOnlyList<CrashLogOperation> Operations { get; }

    /// <summary>Bytes of the file that hold the header and whole records; anything after it was ignored.</summary>
    public long ValidLength { get; }

    /// <summary>True when the file goes on past the last whole record (a torn tail or a bad checksum).</summary>
    public bool IsTruncated => Truncation is not null;

    /// <summary>Why reading stopped early, naming the file offset; null when the whole file was read.</summary>
    public string? Truncation { get; }

    private static List<CrashLogOperation> JoinOperations(IReadOnlyList<CrashLogRecord> records)
    {
        var operations = new List<CrashLogOperation>();
        var byId = new Dictionary<long, int>();
        foreach (var record in records)
        {
            if (record.Kind == CrashLogRecordKind.Complete)
            {
                // The reader already refused a completion of an unknown or already-completed id.
                var at = byId[record.Id];
                operations[at] = operations[at] with { CompleteIndex = record.Index, Ok = record.Ok };
                continue;
            }

            byId[record.Id] = operations.Count;
            operations.Add(new CrashLogOperation(record.Id, record.Kind, record.Offset, record.Length, record.Data,
                record.Fua, record.MayUnmap, record.Index, null, null));
        }

        return operations;
    }
}
