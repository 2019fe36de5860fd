using System.Collections.Concurrent;
using System.Text;
using Akka.Actor;

namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// Where <see cref="FileJournal"/> keeps each persistence id's file. The engine registers the
/// journal file of an image before it starts that image's persistent actor; ids that were
/// not registered fall back to the plugin's <c>dir</c> setting, and with an empty <c>dir</c> to
/// "the id is the image path, the journal lies beside it".
/// </summary>
public sealed class FileJournalPaths : IExtension
{
    private readonly ConcurrentDictionary<string, string> _files = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, JournalReservation> _reservations = new(StringComparer.Ordinal);

    /// <summary>The journal space reservation of <paramref name="persistenceId"/>, shared by the file and the engine.</summary>
    internal JournalReservation ReservationFor(string persistenceId) => _reservations.GetOrAdd(persistenceId, _ => new JournalReservation());

    /// <summary>The instance for <paramref name="system"/>.</summary>
    public static FileJournalPaths Get(ActorSystem system) => system.WithExtension<FileJournalPaths, FileJournalPathsProvider>();

    /// <summary>Journal file name suffix used by the fallbacks.</summary>
    public const string Suffix = ".journal";

    /// <summary>
    /// Maps <paramref name="persistenceId"/> to <paramref name="journalFile"/> (made absolute).
    /// Takes effect for a file not yet opened by the journal; re-registering the same path is a no-op.
    /// </summary>
    public void Register(string persistenceId, string journalFile)
    {
        ArgumentException.ThrowIfNullOrEmpty(persistenceId);
        ArgumentException.ThrowIfNullOrEmpty(journalFile);
        _files[persistenceId] = Path.GetFullPath(journalFile);
    }

    /// <summary>Forgets a mapping; true if there was one.</summary>
    public bool Unregister(string persistenceId) => _files.TryRemove(persistenceId, out _);

    /// <summary>
    /// The file for <paramref name="persistenceId"/>: the registered one; else
    /// <c>dir/escaped-id.journal</c> when <paramref name="dir"/> is set; else, for a rooted id
    /// (an image path), <c>id.journal</c> beside the image.
    /// </summary>
    /// <exception cref="InvalidOperationException">None of the three applies.</exception>
    public string Resolve(string persistenceId, string dir)
    {
        if (_files.TryGetValue(persistenceId, out var file)) return file;
        if (!string.IsNullOrEmpty(dir)) return Path.GetFullPath(Path.Combine(dir, Escape(persistenceId) + Suffix));
        if (Path.IsPathRooted(persistenceId)) return Path.GetFullPath(persistenceId + Suffix);
        throw new InvalidOperationException(
            $"no journal file for persistence id '{persistenceId}': register one with FileJournalPaths, set the plugin's dir, or use an absolute image path as the id");
    }

    /// <summary>
    /// A file name for any persistence id: ASCII letters, digits, '-', '_' and '.' stay, every
    /// other UTF-8 byte becomes %XX, so distinct ids never share a file.
    /// </summary>
    public static string Escape(string persistenceId)
    {
        var sb = new StringBuilder(persistenceId.Length + 8);
        foreach (var b in Encoding.UTF8.GetBytes(persistenceId))
        {
            if (char.IsAsciiLetterOrDigit((char)b) || b is (byte)'-' or (byte)'_' or (byte)'.') sb.Append((char)b);
            else sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        // "." and ".." are directory names; a leading '%' keeps them ordinary file names.
        if (sb.Length > 0 && sb[0] == '.') sb.Insert(0, "%2E").Remove(3, 1);
        return sb.ToString();
    }
}

/// <summary>Creates <see cref="FileJournalPaths"/> for an actor system.</summary>
public sealed class FileJournalPathsProvider : ExtensionIdProvider<FileJournalPaths>
{
    /// <inheritdoc />
    public override FileJournalPaths CreateExtension(ExtendedActorSystem system) => new();
}
