using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>
/// The disk one crash state is recovered on: a byte buffer a worker reuses from state to state
/// (it only grows), so a state costs a copy of the image, not an allocation of it.
/// Thread-safe: the engine reads and writes it from several tasks.
/// </summary>
internal sealed class StateDevice : BlockDevice
{
    private readonly Lock _gate = new();
    private byte[] _data = new byte[64 * 1024];
    private long _length;

    public StateDevice(string name) => Name = name;

    public override string Name { get; }

    public override bool IsReadOnly => false;

    public override long Length
    {
        get { lock (_gate) return _length; }
    }

    /// <summary>The bytes now (valid until the next change).</summary>
    public ReadOnlySpan<byte> Content => _data.AsSpan(0, (int)_length);

    /// <summary>Starts a new state holding <paramref name="content"/>.</summary>
    public void Reset(ReadOnlySpan<byte> content)
    {
        lock (_gate)
        {
            EnsureCapacity(content.Length);
            content.CopyTo(_data);
            _length = content.Length;
        }
    }

    /// <summary>Applies a logged write (or the part of it in [<paramref name="from"/>, <paramref name="to"/>)) or a length change.</summary>
    public void Apply(LoggedCall call, long from = long.MinValue, long to = long.MaxValue)
    {
        if (call.IsFlush) return;
        if (call.Data is null)
        {
            SetLength(call.NewLength);
            return;
        }
        var start = Math.Max(call.Offset, from);
        var end = Math.Min(call.Offset + call.Data.Length, to);
        if (end <= start) return;
        Put(call.Data.AsSpan((int)(start - call.Offset), (int)(end - start)), start);
    }

    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (offset >= _length) return new(0);
            var n = (int)Math.Min(buffer.Length, _length - offset);
            _data.AsSpan((int)offset, n).CopyTo(buffer.Span);
            return new(n);
        }
    }

    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        Put(buffer.Span, offset);
        return ValueTask.CompletedTask;
    }

    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public override void SetLength(long length)
    {
        lock (_gate)
        {
            EnsureCapacity(length);
            // A file that shrinks and grows again reads zeros where the old tail was.
            if (length > _length) _data.AsSpan((int)_length, (int)(length - _length)).Clear();
            _length = length;
        }
    }

    private void Put(ReadOnlySpan<byte> bytes, long offset)
    {
        lock (_gate)
        {
            var end = offset + bytes.Length;
            EnsureCapacity(end);
            if (offset > _length) _data.AsSpan((int)_length, (int)(offset - _length)).Clear();
            bytes.CopyTo(_data.AsSpan((int)offset));
            if (end > _length) _length = end;
        }
    }

    private void EnsureCapacity(long needed)
    {
        if (needed <= _data.Length) return;
        if (needed > Array.MaxLength) throw new IOException($"{needed} bytes exceed what an in-memory state can hold");
        Array.Resize(ref _data, (int)Math.Min(Array.MaxLength, Math.Max(needed, (long)_data.Length * 2)));
    }
}
