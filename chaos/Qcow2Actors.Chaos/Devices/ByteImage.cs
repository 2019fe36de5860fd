namespace Qcow2Actors.Chaos.Devices;

/// <summary>
/// A growable byte array with file semantics (writes past the end extend it, a shrink
/// forgets the tail so a later grow reads zeros). Not thread-safe: its owners lock.
/// Chaos images live in memory, so they are bounded by <see cref="Array.MaxLength"/>.
/// </summary>
internal sealed class ByteImage
{
    private byte[] _data;

    public ByteImage(ReadOnlySpan<byte> content)
    {
        _data = content.ToArray();
        Length = content.Length;
    }

    private ByteImage(byte[] data, long length)
    {
        _data = data;
        Length = length;
    }

    public long Length { get; private set; }

    public ReadOnlySpan<byte> Span => _data.AsSpan(0, (int)Length);

    public ByteImage Clone() => new((byte[])_data.Clone(), Length);

    public byte[] ToArray() => Span.ToArray();

    public int Read(Span<byte> buffer, long offset)
    {
        if (offset >= Length) return 0;
        var n = (int)Math.Min(buffer.Length, Length - offset);
        _data.AsSpan((int)offset, n).CopyTo(buffer);
        return n;
    }

    public void Write(ReadOnlySpan<byte> buffer, long offset)
    {
        var end = checked(offset + buffer.Length);
        EnsureCapacity(end);
        buffer.CopyTo(_data.AsSpan((int)offset));
        if (end > Length) Length = end;
    }

    public void SetLength(long length)
    {
        EnsureCapacity(length);
        // A file that shrinks and grows again reads zeros where the old tail was.
        if (length < Length) _data.AsSpan((int)length, (int)(Length - length)).Clear();
        Length = length;
    }

    private void EnsureCapacity(long needed)
    {
        if (needed <= _data.Length) return;
        if (needed > Array.MaxLength) throw new IOException($"{needed} bytes exceed what an in-memory chaos image can hold");
        var size = Math.Max(needed, Math.Min(Array.MaxLength, Math.Max(4096L, (long)_data.Length * 2)));
        Array.Resize(ref _data, (int)size);
    }
}
