using System.Buffers;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Memory over a pinned span, so a synchronous caller's span can be handed to a device's
/// <see cref="Memory{T}"/>-based core. Valid only until disposed, which the caller does once the
/// core has finished; afterwards the memory is empty, so a core that kept it fails loudly instead of
/// touching freed stack.
/// </summary>
internal sealed unsafe class PointerMemory : MemoryManager<byte>
{
    private byte* _pointer;
    private int _length;

    public PointerMemory(byte* pointer, int length)
    {
        _pointer = pointer;
        _length = length;
    }

    public override Span<byte> GetSpan() => new(_pointer, _length);

    // Already pinned by the caller's fixed statement.
    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        _pointer = null;
        _length = 0;
    }
}
