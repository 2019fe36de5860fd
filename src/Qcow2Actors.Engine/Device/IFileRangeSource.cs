using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A device whose bytes are a host file's, which a server may send straight from the page cache
/// (<c>sendfile</c>) instead of copying them out into a buffer and back into the socket.
/// </summary>
internal interface IFileRangeSource
{
    /// <summary>
    /// Returns the host file's handle with a reference taken on it (the caller gives it back with
    /// <see cref="System.Runtime.InteropServices.SafeHandle.DangerousRelease"/>) when
    /// [<paramref name="offset"/>, + <paramref name="count"/>) lies inside the file and is in the page cache,
    /// waiting for a read already under way but starting none of its own. Null otherwise (the range reaches
    /// past the file's end, is not cached, the system cannot tell, the device is closed): the caller then
    /// reads the ordinary way.
    /// </summary>
    SafeFileHandle? TryPinCached(long offset, int count);
}
