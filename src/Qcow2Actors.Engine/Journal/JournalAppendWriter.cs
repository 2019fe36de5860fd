using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Journal;

/// <summary>
/// Writes one journal append to its device at increasing offsets. Small pieces (magic, frame and event headers, a
/// small event's data) are gathered in a buffer of at most <see cref="StageBytes"/>; a piece at least that large (a
/// pending batch's chunk) is written from where it is. So an append costs a bounded buffer, whatever its size, and a
/// few writes more than one.
/// </summary>
internal sealed class JournalAppendWriter : IJournalOutput
{
    /// <summary>Most bytes gathered before they are written.</summary>
    public const int StageBytes = 16 * 1024;

    // Room for a frame header whatever the append's size, so a reserved header is never split.
    private const int MinStageBytes = 64;

    private readonly IBlockDevice _device;
    private readonly byte[] _stage;
    private long _position;
    private int _staged;

    /// <summary>A writer that starts at <paramref name="start"/> and expects about <paramref name="length"/> bytes in all.</summary>
    public JournalAppendWriter(IBlockDevice device, long start, long length)
    {
        _device = device;
        _position = start;
        _stage = new byte[(int)Math.Clamp(length, MinStageBytes, StageBytes)];
    }

    /// <summary>Bytes passed to <see cref="Write"/> so far.</summary>
    public long Written { get; private set; }

    /// <inheritdoc />
    public void Write(ReadOnlySpan<byte> bytes)
    {
        Written += bytes.Length;
        if (bytes.Length > _stage.Length - _staged)
        {
            WriteStage();
            if (bytes.Length >= _stage.Length)
            {
                _device.Write(bytes, _position);
                _position += bytes.Length;
                return;
            }
        }
        bytes.CopyTo(_stage.AsSpan(_staged));
        _staged += bytes.Length;
    }

    /// <summary>Writes <paramref name="length"/> zero bytes to be filled in later (<see cref="Patch"/>); returns where they are.</summary>
    public long Reserve(int length)
    {
        // At most the smallest buffer: the reserved bytes then always land in it whole (the return value relies on it).
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, MinStageBytes);
        Span<byte> zeros = stackalloc byte[length];
        zeros.Clear();
        Write(zeros);
        return _position + _staged - length;
    }

    /// <summary>Overwrites bytes already written at <paramref name="at"/> (a reserved frame header), in the buffer or on the device.</summary>
    public void Patch(long at, ReadOnlySpan<byte> bytes)
    {
        if (at < _position)
        {
            // The part already on the device is written again there.
            int onDevice = (int)Math.Min(bytes.Length, _position - at);
            _device.Write(bytes[..onDevice], at);
            bytes = bytes[onDevice..];
            at += onDevice;
        }
        if (bytes.IsEmpty) return;
        bytes.CopyTo(_stage.AsSpan((int)(at - _position)));
    }

    /// <summary>Writes what is still gathered; call once after the last <see cref="Write"/>.</summary>
    public void Complete() => WriteStage();

    private void WriteStage()
    {
        if (_staged == 0) return;
        _device.Write(_stage.AsSpan(0, _staged), _position);
        _position += _staged;
        _staged = 0;
    }
}
