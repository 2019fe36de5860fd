using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// Reads the batches an image's file journal holds, as the engine's replay would receive them
/// (same scan and torn-tail rule: <see cref="JournalFile"/>), without writing anything: the file
/// is opened read-only, never created, cut, compacted or deleted.
/// </summary>
internal static class JournalFileReader
{
    /// <summary>Batches not yet deleted, in order; none when the file does not exist.</summary>
    /// <exception cref="InvalidDataException">The file is not a journal, or holds events we cannot decode.</exception>
    public static IReadOnlyList<JournalBatch> ReadBatches(string journalPath, int maxRecordLength)
    {
        var batches = new List<JournalBatch>();
        if (!File.Exists(journalPath)) return batches;
        using var file = new JournalFile(journalPath, maxRecordLength,
            openExisting: p => FileBlockDevice.Open(p, writable: false),
            createNew: p => throw new InvalidOperationException($"{p}: a read-only replay never creates a journal file"),
            takeLock: false);
        file.Replay(1, long.MaxValue, long.MaxValue, e =>
        {
            if (e.SerializerId != JournalBatchSerializer.Id)
                throw new InvalidDataException(
                    $"journal '{journalPath}' holds event {e.SequenceNr} of serializer {e.SerializerId}, not the engine's batches; run 'q2a recover' with the configuration that wrote it");
            batches.Add(JournalBatchSerializer.Decode(e.DataArray()));
        });
        return batches;
    }
}
