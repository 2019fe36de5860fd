using System.Collections.Concurrent;
using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Write;

/// <summary>The metadata events of a read-write image a test can fail (qemu-iotests 026 style).</summary>
internal enum MetadataEvent
{
    /// <summary>A journal append carrying a new L2 table.</summary>
    L2Allocation,

    /// <summary>A journal append carrying a new refcount block.</summary>
    RefcountBlockAllocation,

    /// <summary>A journal append carrying a new (grown) refcount table.</summary>
    RefcountTableGrowth,

    /// <summary>A journal append carrying a new (grown) L1 table.</summary>
    L1Growth,

    /// <summary>A read of the old data (image or backing file) a partial-cluster write copies.</summary>
    CowRead,

    /// <summary>Any journal append (group commit).</summary>
    JournalAppend,

    /// <summary>A write of cluster 0 (dirty/clean marks, header fields, backing name).</summary>
    HeaderUpdate,

    /// <summary>A checkpoint writing L2 tables, refcount blocks, the refcount table or the L1 table in place.</summary>
    CheckpointWriteBack,

    /// <summary>A snapshot table or snapshot L1 write (create, delete, revert).</summary>
    SnapshotEdit,
}

/// <summary>
/// The seam a fault-injection test hooks: each named metadata event calls <see cref="Raise"/> right
/// before its I/O, on the thread doing it, and an exception a hook returns is thrown there, as if the
/// file had failed that call (EIO, ENOSPC: <see cref="IOException"/> with the errno as HResult). No hook
/// installed (always, outside tests): one volatile read per event.
/// </summary>
internal static class MetadataEvents
{
    private static readonly ConcurrentDictionary<object, Func<MetadataEvent, string, Exception?>> Hooks = new();
    private static volatile bool s_any;

    /// <summary>Installs <paramref name="hook"/> (called with the event and the file's path) until the result is disposed.</summary>
    public static IDisposable Inject(Func<MetadataEvent, string, Exception?> hook)
    {
        var key = new object();
        Hooks[key] = hook;
        s_any = true;
        return new Removal(key);
    }

    /// <summary>Announces <paramref name="e"/> on the file <paramref name="path"/>; throws what a hook asks for.</summary>
    public static void Raise(MetadataEvent e, string path)
    {
        if (!s_any) return;
        foreach (var hook in Hooks.Values)
            if (hook(e, path) is { } failure) throw failure;
    }

    /// <summary>Announces the events a journal batch carries (every append is <see cref="MetadataEvent.JournalAppend"/>).</summary>
    public static void RaiseForBatch(object payload, string path)
    {
        if (!s_any) return;
        IEnumerable<TableKind> newTables = payload switch
        {
            JournalBatch batch => batch.Records.OfType<NewTable>().Select(t => t.Kind),
            PendingJournalBatch pending => pending.NewTables,
            _ => [],
        };
        foreach (var kind in newTables)
        {
            MetadataEvent? e = kind switch
            {
                TableKind.L2 => MetadataEvent.L2Allocation,
                TableKind.RefcountBlock => MetadataEvent.RefcountBlockAllocation,
                TableKind.RefcountTable => MetadataEvent.RefcountTableGrowth,
                TableKind.L1 => MetadataEvent.L1Growth,
                _ => null,
            };
            if (e is { } named) Raise(named, path);
        }
        Raise(MetadataEvent.JournalAppend, path);
    }

    private sealed class Removal(object key) : IDisposable
    {
        public void Dispose()
        {
            Hooks.TryRemove(key, out _);
            s_any = !Hooks.IsEmpty;
        }
    }
}
