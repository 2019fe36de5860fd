using System.Collections.Concurrent;
using System.Collections.Immutable;
using Akka.Actor;
using Akka.Configuration;
using Akka.Event;
using Akka.Persistence;
using Akka.Persistence.Journal;
using Akka.Serialization;

namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// An Akka.Persistence journal with one append-only file per persistence id (framed,
/// CRC-32C-checked records; see the format in the engine's journal folder). Each
/// <c>WriteMessagesAsync</c> call is one group commit: its records are written at the file's end
/// (from the buffers the events are in, a few positional writes) and made durable with one
/// fdatasync before it completes. A new file
/// is acknowledged only after its directory is fsynced too. Replay drops a torn or corrupt
/// tail (everything from the first bad record on), and the next write cuts it off.
/// Deleting messages rewrites the file atomically (temp file, rename, directory fsync).
/// A failed fsync is final for that file until the journal is restarted.
/// </summary>
/// <remarks>
/// HOCON, at <c>akka.persistence.journal.qcow2-file</c>: <c>dir</c> (where unregistered ids
/// keep <c>escaped-id.journal</c>; empty = beside the image named by the id) and
/// <c>max-record-size</c>, and <c>io-threads</c> (most threads of its own doing file I/O at
/// once). Payloads go
/// through Akka's serialization, so any event type with a serializer binding works. File I/O
/// never runs on the journal actor's thread or Akka's default dispatcher, so a slow fsync of one
/// image never holds up another's writes.
/// </remarks>
public sealed class FileJournal : AsyncWriteJournal
{
    /// <summary>The plugin id in <c>hocon/reference.conf</c>.</summary>
    public const string PluginId = "akka.persistence.journal.qcow2-file";

    private readonly string _dir;
    private readonly int _maxRecordLength;
    private readonly Akka.Serialization.Serialization _serialization;
    private readonly FileJournalPaths _paths;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly ConcurrentDictionary<string, JournalFile> _files = new(StringComparer.Ordinal);
    private readonly BlockingIo _io;

    /// <summary>Called by Akka.Persistence with this plugin's configuration section.</summary>
    public FileJournal(Config config)
    {
        ArgumentNullException.ThrowIfNull(config);
        _dir = config.GetString("dir", "") ?? "";
        var max = config.GetByteSize("max-record-size", 64L * 1024 * 1024) ?? 64L * 1024 * 1024;
        _maxRecordLength = (int)Math.Clamp(max, 1024, int.MaxValue / 2);
        _serialization = Context.System.Serialization;
        _paths = FileJournalPaths.Get(Context.System);
        _io = BlockingIo.For(Context.System, "file-journal", config.GetInt("io-threads", 16));
    }

    /// <summary>The engine's reference configuration (embedded <c>hocon/reference.conf</c>), for fallback.</summary>
    public static Config ReferenceConfig { get; } =
        ConfigurationFactory.FromResource<FileJournal>("Qcow2Actors.reference.conf");

    /// <summary>
    /// Ask the journal actor to close the file of a persistence id (for example when its image
    /// is closed), so the process does not keep one descriptor per image it ever opened.
    /// It replies <see cref="Released"/>. A later message for that id reopens and rescans the file.
    /// </summary>
    public sealed record Release(string PersistenceId);

    /// <summary>Reply to <see cref="Release"/>.</summary>
    public sealed record Released(string PersistenceId);

    /// <inheritdoc />
    protected override bool ReceivePluginInternal(object message)
    {
        if (message is not Release release) return false;
        var sender = Sender;
#pragma warning disable CA2000 // Removed from the map, the file is closed by the lambda on the journal's I/O thread.
        if (_files.TryRemove(release.PersistenceId, out var file))
#pragma warning restore CA2000
            _io.Run(() => { lock (file) file.Dispose(); }).PipeTo(sender, success: () => new Released(release.PersistenceId));
        else
            sender.Tell(new Released(release.PersistenceId));
        return true;
    }

    /// <inheritdoc />
    protected override async Task<IImmutableList<Exception?>> WriteMessagesAsync(IEnumerable<AtomicWrite> messages, CancellationToken cancellationToken = default)
    {
        var writes = messages.ToList();
        var results = new Exception?[writes.Count];
        var byFile = new Dictionary<string, List<IReadOnlyList<StoredEvent>>>(StringComparer.Ordinal);
        var payloads = new Dictionary<string, List<object>>(StringComparer.Ordinal);
        for (var i = 0; i < writes.Count; i++)
        {
            var write = writes[i];
            try
            {
                var events = ((IImmutableList<IPersistentRepresentation>)write.Payload).Select(ToStored).ToList();
                if (events.Count == 0) continue;
                if (!byFile.TryGetValue(write.PersistenceId, out var list)) byFile[write.PersistenceId] = list = [];
                list.Add(events);
                if (!payloads.TryGetValue(write.PersistenceId, out var objects)) payloads[write.PersistenceId] = objects = [];
                objects.AddRange(((IImmutableList<IPersistentRepresentation>)write.Payload).Select(p => p.Payload));
            }
            catch (Exception e)
            {
                // Rejected, not failed: this write could not be serialized, the journal is fine,
                // and the actor's OnPersistRejected decides what to do.
                results[i] = e;
            }
        }
        cancellationToken.ThrowIfCancellationRequested();
        await Task.WhenAll(byFile.Select(kv => OnFile(kv.Key, f =>
        {
            // A fault-injection test may fail this append as the file would (no-op otherwise).
            foreach (var payload in payloads[kv.Key]) Write.MetadataEvents.RaiseForBatch(payload, f.Path);
            f.Append(kv.Value);
        }))).ConfigureAwait(false);
        return results.All(r => r is null) ? null! : results.ToImmutableList();
    }

    /// <inheritdoc />
    protected override Task DeleteMessagesToAsync(string persistenceId, long toSequenceNr, CancellationToken cancellationToken = default) =>
        OnFile(persistenceId, f => f.DeleteTo(toSequenceNr));

    /// <inheritdoc />
    public override Task ReplayMessagesAsync(IActorContext context, string persistenceId, long fromSequenceNr, long toSequenceNr, long max,
        Action<IPersistentRepresentation> recoveryCallback) =>
        OnFile(persistenceId, f => f.Replay(fromSequenceNr, toSequenceNr, max, e => recoveryCallback(FromStored(persistenceId, e))));

    /// <inheritdoc />
    public override Task<long> ReadHighestSequenceNrAsync(string persistenceId, long fromSequenceNr, CancellationToken cancellationToken = default) =>
        OnFile(persistenceId, f => f.HighestSequenceNr);

    /// <inheritdoc />
    protected override void PostStop()
    {
        foreach (var file in _files.Values)
            lock (file) file.Dispose();
        _files.Clear();
        base.PostStop();
    }

    private Task OnFile(string persistenceId, Action<JournalFile> action) =>
        OnFile(persistenceId, f =>
        {
            action(f);
            return true;
        });

    private Task<T> OnFile<T>(string persistenceId, Func<JournalFile, T> action)
    {
        JournalFile file;
        try
        {
            file = _files.GetOrAdd(persistenceId, id => new JournalFile(_paths.Resolve(id, _dir), _maxRecordLength, reservation: _paths.ReservationFor(id)));
        }
        catch (Exception e)
        {
            return Task.FromException<T>(e);
        }
        var log = _log;
        // Blocking file I/O (and fsync) runs on the journal's I/O threads, never on the journal actor's.
        return _io.Run(() =>
        {
            lock (file)
            {
                if (file.EnsureLoaded() && file.DroppedBytes > 0)
                    log.Warning("journal {0}: dropped {1} bytes of torn or corrupt records after offset {2}",
                        file.Path, file.DroppedBytes, file.GoodEnd);
                return action(file);
            }
        });
    }

    private StoredEvent ToStored(IPersistentRepresentation p)
    {
        var payload = p.Payload;
        var serializer = _serialization.FindSerializerFor(payload);
        var manifest = Akka.Serialization.Serialization.ManifestFor(serializer, payload);
        // The pending batch's chunks go to the file as they are (no batch-sized array): ISequenceSerializer.
        var data = serializer is ISequenceSerializer sequence ? sequence.ToSequence(payload) : new System.Buffers.ReadOnlySequence<byte>(serializer.ToBinary(payload));
        return new StoredEvent(p.SequenceNr, p.Timestamp, serializer.Identifier, manifest, p.Manifest ?? "", p.WriterGuid ?? "", data);
    }

    private Persistent FromStored(string persistenceId, StoredEvent e)
    {
        var payload = _serialization.Deserialize(e.DataArray(), e.SerializerId, e.SerializerManifest);
        return new Persistent(payload, e.SequenceNr, persistenceId, e.Manifest, isDeleted: false, sender: ActorRefs.NoSender,
            writerGuid: e.WriterGuid, timestamp: e.Timestamp);
    }
}
