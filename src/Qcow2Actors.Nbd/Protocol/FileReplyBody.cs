using Qcow2Actors.Engine;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// The data of a READ reply that goes straight from the image's host file (<see cref="HostFileRange"/>):
/// sent with <c>sendfile</c> while the pin holds, or, once the client is slow to take it, copied into a
/// buffer so the pin can go (<see cref="Copy"/>): a pin holds clusters and the image's request gate, and
/// must not wait on a client. Used by one sender at a time.
/// </summary>
internal sealed class FileReplyBody(HostFileRange pin) : IDisposable
{
    private HostFileRange? _pin = pin;
    private byte[]? _copy;
    private int _copiedFrom;
    private Exception? _failed;

    /// <summary>Bytes of data the reply carries.</summary>
    public int Length { get; } = pin.Length;

    /// <summary>When the sender took the reply (its TimeProvider's timestamp): how long the pin has waited.</summary>
    public long PinnedAt { get; set; }

    /// <summary>Bytes already on the socket.</summary>
    public int Sent { get; set; }

    /// <summary>The pin while the bytes still go from the file; null once copied (or disposed).</summary>
    public HostFileRange? Pin => _pin;

    /// <summary>The unsent bytes, once copied; throws what the copy met, if it failed.</summary>
    public ReadOnlyMemory<byte> CopiedRest()
    {
        if (_failed is not null) throw new IOException($"could not read a reply's data from the image file: {_failed.Message}", _failed);
        return _copy!.AsMemory(Sent - _copiedFrom, Length - Sent);
    }

    /// <summary>
    /// Reads the unsent bytes into a pooled buffer and lets the pin go; does nothing once copied. Never
    /// throws: a failed read is kept and thrown by <see cref="CopiedRest"/> (the connection then ends, since
    /// the reply's header may be out already).
    /// </summary>
    public void Copy()
    {
        if (_pin is not { } pin) return;
        int rest = Length - Sent;
        try
        {
            _copy = RequestBuffers.Rent(Math.Max(rest, 1));
            _copiedFrom = Sent;
            pin.CopyTo(_copy.AsSpan(0, rest), Sent);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or UnauthorizedAccessException)
        {
            _failed = ex;
        }
        _pin = null;
        pin.Dispose();
    }

    /// <summary>Lets the pin go and returns the copy's buffer (after the send, or when the reply is dropped).</summary>
    public void Dispose()
    {
        _pin?.Dispose();
        _pin = null;
        if (_copy is { } copy) RequestBuffers.Return(copy);
        _copy = null;
    }
}
