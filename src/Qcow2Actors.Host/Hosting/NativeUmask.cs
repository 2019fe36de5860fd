using System.Runtime.InteropServices;

namespace Qcow2Actors.Host.Hosting;

/// <summary>The process file-mode creation mask (.NET has no API for it).</summary>
internal static partial class NativeUmask
{
    /// <summary>Sets the mask (bits removed from every new file's and socket's mode) and returns the previous one.</summary>
    public static uint Set(uint mask) => Umask(mask);

    [LibraryImport("libc", EntryPoint = "umask")]
    private static partial uint Umask(uint mask);
}
