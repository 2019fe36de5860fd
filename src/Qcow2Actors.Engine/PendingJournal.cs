using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine;

/// <summary>Where a read-only open finds the journal of a journal-pending image.</summary>
/// <param name="ResolveFile">Image path → journal file.</param>
/// <param name="MaxRecordLength">The file journal's max-record-size.</param>
/// <param name="Refusal">Set when the journal is not a file we can read (another plugin): image path → why not.</param>
internal sealed record PendingJournalSource(Func<string, string> ResolveFile, int MaxRecordLength, Func<string, string>? Refusal = null)
{
    /// <summary>The reference configuration: <c>&lt;image&gt;.journal</c> beside the image, 64 MiB records.</summary>
    public static PendingJournalSource Default { get; } =
        new(p => Path.GetFullPath(p) + FileJournalPaths.Suffix, 64 * 1024 * 1024);
}

/// <summary>
/// Read-only access to an image a crash left with journal records pending (our incompatible
/// bit 63): the pending journal is applied in memory, by the same recovery a write open runs,
/// on a copy-on-write overlay of the file. Readers see the image exactly as <c>q2a recover</c>
/// will leave it; neither the image nor its journal is written, created, cut or deleted.
/// </summary>
public static class PendingJournal
{
    private const int HeaderBytes = Qcow2Header.IncompatibleFeaturesOffset + 8;

    // Held by every open that has the "write" permission (QEMU's layout: base 100 + bit 1).
    private const int WriteLockByte = ImageLock.PermissionBase + 1;

    /// <summary>True when <paramref name="path"/> is a qcow2 v3 image whose header has the journal-pending bit set.</summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    public static bool IsPending(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Could not open '{path}': No such file or directory", path);
        using var device = FileBlockDevice.Open(path, writable: false);
        return IsPending(device);
    }

    /// <summary>
    /// Opens <paramref name="path"/> read-only. A journal-pending image comes back as it will be
    /// after recovery (a sealed in-memory overlay over the file); any other file as it is.
    /// </summary>
    /// <exception cref="IOException">The image is pending and its journal is missing (the message names
    /// <c>q2a recover --rebuild</c>), or recovery would refuse it.</exception>
    public static IBlockDevice OpenRecovered(string path) => OpenRecovered(path, out _);

    /// <summary>
    /// <see cref="OpenRecovered(string)"/>, also telling whether the header had the journal-pending bit when
    /// first read (one open of the file for both, where <see cref="IsPending(string)"/> would be a second).
    /// </summary>
    internal static IBlockDevice OpenRecovered(string path, out bool pending)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Could not open '{path}': No such file or directory", path);
        IBlockDevice file = FileBlockDevice.Open(path, writable: false);
        try
        {
            pending = IsPending(file);
            return pending ? Overlay(file, path, null, rebuildWithoutJournal: false) : file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <paramref name="file"/> itself when it is not journal-pending; else a sealed overlay (owning
    /// <paramref name="file"/>) holding the recovered image. On failure <paramref name="file"/> is
    /// left to the caller to dispose.
    /// </summary>
    internal static IBlockDevice Overlay(IBlockDevice file, string path, PendingJournalSource? source, bool rebuildWithoutJournal)
    {
        if (!IsPending(file)) return file;
        source ??= PendingJournalSource.Default;
        if (source.Refusal is { } refuse) throw new IOException(refuse(path));
        var batches = JournalFileReader.ReadBatches(source.ResolveFile(path), source.MaxRecordLength);
        if (batches.Count == 0 && !rebuildWithoutJournal && ImageLock.IsByteLocked(path, WriteLockByte))
        {
            // Beside a live writer (-U), "pending header, no journal" is not a lost journal: its checkpoint
            // cleared the header and emptied the journal between our two reads. Advising --rebuild here would lose writes.
            if (!IsPending(file)) return file;
            throw new IOException(
                $"'{path}' is being written by another process, which emptied its journal while it was read; read it again (a live image may change under -U)");
        }
        var overlay = new CopyOnWriteBlockDevice(file);
        // A corrupt image is shown as `check -r all` will find it: replayed, still marked corrupt.
        Write.ImageRecovery.Recover(overlay, path, batches, rebuildWithoutJournal, keepCorrupt: true);
        overlay.Seal();
        return overlay;
    }

    /// <summary>
    /// For <c>check -r</c> on an image that is both journal-pending and marked corrupt (which
    /// <c>q2a recover</c> refuses): replays the journal into the file, clears the dirty and
    /// journal-pending bits but keeps the corrupt bit for the repair to clear, then deletes the
    /// journal. Does nothing and returns false for any other image.
    /// </summary>
    /// <exception cref="IOException">The journal is missing (the message names <c>q2a recover --rebuild</c>).</exception>
    public static bool ReplayIntoCorruptImage(string path)
    {
        // Replaying writes: the write lock first, as every writer takes it (nobody else has the image open).
        using var imageLock = ImageLock.Acquire(path, LockMode.Writer);
        using var device = FileBlockDevice.Open(path, writable: true);
        if (!IsPending(device) || !Write.ImageRecovery.ReadHeader(device).Header.IsCorrupt) return false;
        var source = PendingJournalSource.Default;
        string journal = source.ResolveFile(path);
        var batches = JournalFileReader.ReadBatches(journal, source.MaxRecordLength);
        Write.ImageRecovery.Recover(device, path, batches, rebuildWithoutJournal: false, keepCorrupt: true);
        // The replay and the clean header are durable (Recover flushed): the journal has done its job.
        if (File.Exists(journal))
        {
            File.Delete(journal);
            DirectorySync.FsyncParentOf(journal);
        }
        return true;
    }

    private static bool IsPending(IBlockDevice device)
    {
        Span<byte> h = stackalloc byte[HeaderBytes];
        if (device.Read(h, 0) < HeaderBytes) return false;
        return Qcow2Header.TryPeekIncompatibleFeatures(h, out var features)
            && (features & IncompatibleFeatures.JournalPending) != 0;
    }
}
