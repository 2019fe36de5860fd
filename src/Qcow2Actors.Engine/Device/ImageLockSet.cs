namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The locks of one open image: its file, its external data file and every backing file, one
/// <see cref="ImageLock"/> per file (keyed by full path, so a file reached twice is locked once).
/// The open image owns it for its lifetime and disposes it after closing its files.
/// </summary>
public sealed class ImageLockSet : IDisposable
{
    private readonly object _gate = new();
    private readonly Dictionary<string, ImageLock> _locks = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <summary>Locks <paramref name="path"/> with <paramref name="mode"/> unless this set already holds it.</summary>
    /// <exception cref="ImageLockException">Another open conflicts.</exception>
    public void Acquire(string path, LockMode mode, string? displayName = null)
    {
        string key = Path.GetFullPath(path);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_locks.ContainsKey(key)) return;
            _locks.Add(key, ImageLock.Acquire(path, mode, displayName));
        }
    }

    /// <summary>
    /// Takes over <paramref name="held"/>, a lock the caller took on <paramref name="path"/>'s file
    /// (e.g. before creating it, so no other process gets in between creation and open): the set
    /// owns it from here on and releases it with the others, also when the open fails.
    /// </summary>
    public void Adopt(string path, ImageLock held)
    {
        ArgumentNullException.ThrowIfNull(held);
        string key = Path.GetFullPath(path);
        lock (_gate)
        {
            if (_disposed || _locks.ContainsKey(key))
            {
                held.Dispose();
                ObjectDisposedException.ThrowIf(_disposed, this);
                return;
            }
            _locks.Add(key, held);
        }
    }

    /// <summary>True when this set holds a lock on <paramref name="path"/>.</summary>
    public bool Holds(string path)
    {
        lock (_gate) return _locks.ContainsKey(Path.GetFullPath(path));
    }

    /// <summary>Releases every lock.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var l in _locks.Values) l.Dispose();
            _locks.Clear();
        }
    }
}
