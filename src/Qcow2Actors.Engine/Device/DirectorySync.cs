using System.Runtime.InteropServices;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Makes directory entries durable. Creating, renaming or deleting a file changes its
/// directory, and on Linux that change survives a crash only once the directory itself is
/// fsynced; fsyncing the file alone does not make its name durable.
/// </summary>
public static partial class DirectorySync
{
    private const int ORdOnly = 0;
    private const int OCloExec = 0x80000;

    /// <summary>fsyncs the directory at <paramref name="directory"/>. A no-op where the OS has no directory handles to sync (Windows).</summary>
    /// <exception cref="IOException">open or fsync failed; like any fsync failure it must not be retried.</exception>
    public static void Fsync(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (OperatingSystem.IsWindows()) return;
        var fd = Open(directory, ORdOnly | OCloExec);
        if (fd < 0) throw new IOException($"cannot open directory {directory} to fsync it: errno {Marshal.GetLastPInvokeError()}");
        try
        {
            if (FSync(fd) != 0) throw new IOException($"fsync of directory {directory} failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>fsyncs the directory that holds <paramref name="filePath"/>.</summary>
    public static void FsyncParentOf(string filePath) =>
        Fsync(Path.GetDirectoryName(Path.GetFullPath(filePath)) ?? throw new ArgumentException($"{filePath} has no parent directory", nameof(filePath)));

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FSync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
