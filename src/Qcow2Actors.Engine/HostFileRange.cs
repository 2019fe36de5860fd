using Microsoft.Win32.SafeHandles;

namespace Qcow2Actors.Engine;

/// <summary>
/// Guest bytes pinned where they lie: one run of an image's host file, in the host's page cache
/// (<see cref="Qcow2Image.TryPinFileRange"/>). A server sends them straight from the file
/// (<c>sendfile</c>), which saves copying them out into a buffer and back into the socket.
/// </summary>
/// <remarks>
/// While pinned, the clusters cannot be freed and given to another write, an online snapshot edit
/// waits, and <see cref="Handle"/> stays open. So a pin must not wait on anything outside the
/// server (a client that is slow to read): when the bytes cannot go out at once, copy what is left
/// (<see cref="CopyTo"/>) and dispose the pin. Dispose exactly when done; it is idempotent.
/// </remarks>
public sealed class HostFileRange : IDisposable
{
    private readonly IDisposable? _lease;
    private readonly RequestGate? _gate;
    private int _disposed;

    internal HostFileRange(SafeFileHandle handle, long fileOffset, int length, IDisposable? lease, RequestGate? gate)
    {
        Handle = handle;
        FileOffset = fileOffset;
        Length = length;
        _lease = lease;
        _gate = gate;
    }

    /// <summary>The host file (a reference is held on it until <see cref="Dispose"/>).</summary>
    public SafeFileHandle Handle { get; }

    /// <summary>Where the guest bytes start in the host file.</summary>
    public long FileOffset { get; }

    /// <summary>How many bytes: the whole guest range asked for.</summary>
    public int Length { get; }

    /// <summary>
    /// Copies the pinned bytes from <paramref name="skip"/> on into <paramref name="destination"/> (as many as
    /// fit): for a send that has to wait, so the pin can go first.
    /// </summary>
    /// <exception cref="IOException">The file ended early or the read failed.</exception>
    public void CopyTo(Span<byte> destination, int skip)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        ArgumentOutOfRangeException.ThrowIfNegative(skip);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(skip, Length);
        var target = destination[..Math.Min(destination.Length, Length - skip)];
        if (Device.HostFileCalls.ReadFully(Handle, target, FileOffset + skip) != target.Length)
            throw new IOException($"the host file ended inside a pinned range at {FileOffset + skip}");
    }

    /// <summary>Lets the range go: the file reference, the clusters' lease and the request admission.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        Handle.DangerousRelease();
        _lease?.Dispose();
        _gate?.Exit();
    }
}
