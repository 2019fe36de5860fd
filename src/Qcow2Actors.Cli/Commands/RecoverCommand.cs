using Qcow2Actors.Engine.Device;
using System.CommandLine;
using Qcow2Actors.Engine;
using Qcow2Actors.Format;

namespace Qcow2Actors.Cli.Commands;

/// <summary>What the header said before <c>q2a recover</c> opened the image.</summary>
internal enum RecoverState
{
    /// <summary>Neither dirty nor journal pending, and no journal file beside it: nothing to do.</summary>
    Clean,
    /// <summary>Journal-pending bit set and the journal file present: it is replayed.</summary>
    JournalPending,
    /// <summary>Journal-pending bit set, journal file missing: refcounts rebuilt only with <c>--rebuild</c>.</summary>
    JournalMissing,
    /// <summary>Dirty bit alone (QEMU with lazy refcounts, or a crash of ours before the first batch): refcounts rebuilt.</summary>
    Dirty,
    /// <summary>Clean header but a journal file is left beside the image: the open truncates it.</summary>
    StrayJournal,
}

/// <summary>
/// <c>q2a recover [--rebuild] IMG</c>: opens the image read-write through the engine, which
/// replays a pending journal (or rebuilds the refcounts of an image QEMU left dirty), then
/// closes it cleanly (checkpoint, journal removed, dirty and journal-pending bits cleared) and
/// says what it did. An image whose journal is missing is refused unless <c>--rebuild</c>; an
/// image marked corrupt is refused (that is <c>check -r all</c>'s job); a clean image is left
/// untouched (opening it read-write would drop its bitmaps).
/// </summary>
internal static class RecoverCommand
{
    public static Command Create()
    {
        var rebuild = new Option<bool>("--rebuild")
        {
            Description = "if the journal is missing, rebuild refcounts from the tables on disk (writes since the last checkpoint are lost)",
        };
        var path = new Argument<string>("filename") { Description = "the qcow2 image" };
        var command = new Command("recover", "Replay a pending journal (or rebuild a dirty image's refcounts) and close the image clean")
            { rebuild, path };
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
            RunAsync(parse.GetValue(path)!, parse.GetValue(rebuild), Console.Out, ct)));
        return command;
    }

    public static async Task<int> RunAsync(string path, bool rebuild, TextWriter stdout, CancellationToken ct)
    {
        RecoverState state;
        // The header (and the journal beside it) are only ours to judge under the write lock: an
        // image q2a serve or QEMU holds is refused here, before anything is read or replayed.
        // The engine's open below takes the lock again for itself.
        if (File.Exists(path))
        {
            using (ImageLock.Acquire(path, LockMode.Writer))
                state = ReadState(path);
        }
        else
        {
            state = ReadState(path);
        }
        if (state == RecoverState.Clean)
        {
            await stdout.WriteLineAsync($"'{path}' is clean: nothing to recover").ConfigureAwait(false);
            return 0;
        }

        var host = ImageHost.Create();
        try
        {
            var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, RebuildWithoutJournal = rebuild }, ct)
                .ConfigureAwait(false);
            // A clean close: checkpoint, journal truncated and removed, header bits cleared.
            await image.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            await host.DisposeAsync().ConfigureAwait(false);
        }

        // Say "clean" only if the header now says so.
        var after = ReadHeader(path).Header;
        if (after.IsDirty || after.IsJournalPending)
            throw new CliException($"'{path}' is still marked {(after.IsJournalPending ? "journal pending" : "dirty")} after recovery");
        string what = state switch
        {
            RecoverState.JournalPending => "journal replayed",
            RecoverState.JournalMissing => "journal missing, refcounts rebuilt from the tables (writes since the last checkpoint are lost)",
            RecoverState.Dirty => "image was left dirty, refcounts rebuilt from the tables",
            _ => "stray journal removed",
        };
        await stdout.WriteLineAsync($"Recovered '{path}': {what}, image is clean").ConfigureAwait(false);
        return 0;
    }

    /// <summary>Classifies the image from its header and the journal file beside it.</summary>
    /// <exception cref="CliException">The file is not a qcow2 image we can read, or it is marked corrupt.</exception>
    internal static RecoverState ReadState(string path)
    {
        var header = ReadHeader(path).Header;
        // The engine refuses these too; saying so before starting it is quicker and clearer.
        if (header.IsCorrupt)
            throw new CliException($"'{path}' is marked corrupt (incompatible bit 1): recover does not repair it; run 'q2a check -r all' first");
        bool journalFile = File.Exists(JournalPath(path));
        if (header.IsJournalPending) return journalFile ? RecoverState.JournalPending : RecoverState.JournalMissing;
        if (header.IsDirty) return RecoverState.Dirty;
        return journalFile ? RecoverState.StrayJournal : RecoverState.Clean;
    }

    /// <summary>Where the engine keeps an image's journal with the reference configuration: beside it.</summary>
    internal static string JournalPath(string path) => Path.GetFullPath(path) + ".journal";

    private static ImageHeaderBlock ReadHeader(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Could not open '{path}': No such file or directory", path);
        try
        {
            using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            // Cluster 0 is at most 2 MiB; a shorter file reads as zeros past its end.
            var cluster0 = new byte[(int)Math.Min(2 * 1024 * 1024, RandomAccess.GetLength(file))];
            int read = 0;
            while (read < cluster0.Length)
            {
                int n = RandomAccess.Read(file, cluster0.AsSpan(read), read);
                if (n == 0) break;
                read += n;
            }
            return ImageHeaderBlock.Read(cluster0, IncompatibleFeatures.KnownToQcow2Actors);
        }
        catch (Qcow2FormatException ex)
        {
            throw new CliException($"Could not open '{path}': {ex.Message}", ex);
        }
    }
}
