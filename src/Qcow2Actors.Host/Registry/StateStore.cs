using System.Runtime.InteropServices;
using System.Text.Json;

namespace Qcow2Actors.Host.Registry;

/// <summary>
/// Reads and writes host-state.json. A write goes to a temporary file that is fsynced, renamed over the
/// old one, and the directory fsynced, so a crash leaves either the old state or the new one, never a torn file.
/// </summary>
internal sealed partial class StateStore(string dataDir)
{
    public const string FileName = "host-state.json";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public string Path { get; } = System.IO.Path.Combine(dataDir, FileName);

    /// <summary>The saved state, or an empty one when there is none yet.</summary>
    /// <exception cref="InvalidDataException">The file exists but is not a host state (one line naming the file).</exception>
    public HostState Load()
    {
        if (!File.Exists(Path)) return new HostState();
        try
        {
            var state = JsonSerializer.Deserialize<HostState>(File.ReadAllBytes(Path), Json) ?? new HostState();
            if (state.Version != 1) throw new InvalidDataException($"'{Path}' has state version {state.Version}; this q2a host reads version 1");
            return state;
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"'{Path}' is not a valid host state: {ex.Message.ReplaceLineEndings(" ")}");
        }
    }

    public async Task SaveAsync(HostState state, CancellationToken cancellationToken = default)
    {
        var temp = Path + ".tmp";
        await using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            await JsonSerializer.SerializeAsync(file, state, Json, cancellationToken);
            await file.FlushAsync(cancellationToken);
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, Path, overwrite: true);
        SyncDirectory(dataDir);
    }

    /// <summary>Makes the rename durable: fsync of the directory holding the file.</summary>
    private static void SyncDirectory(string directory)
    {
        const int ReadOnlyDirectory = 0x10000; // O_RDONLY | O_DIRECTORY (Linux)
        int fd = Open(directory, ReadOnlyDirectory);
        if (fd < 0) throw new IOException($"cannot open '{directory}' to sync it (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (Fsync(fd) != 0) throw new IOException($"fsync of '{directory}' failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
