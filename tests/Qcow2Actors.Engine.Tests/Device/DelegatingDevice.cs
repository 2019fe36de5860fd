using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// A device that passes every call to <paramref name="inner"/>; a test decorator overrides only
/// the calls it gates, fails or records, so what it changes stands out from what it forwards.
/// With <paramref name="ownsInner"/> false, disposing it leaves <paramref name="inner"/> open
/// (a handle the engine may close while the test still reads the memory behind it).
/// </summary>
public abstract class DelegatingDevice(IBlockDevice inner, bool ownsInner = true) : IBlockDevice
{
    /// <summary>The device calls are passed to.</summary>
    protected IBlockDevice Inner => inner;

    public virtual long Length => inner.Length;
    public virtual bool IsReadOnly => inner.IsReadOnly;
    public virtual string Name => inner.Name;
    public virtual int Read(Span<byte> buffer, long offset) => inner.Read(buffer, offset);
    public virtual ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, offset, cancellationToken);
    public virtual void Write(ReadOnlySpan<byte> buffer, long offset) => inner.Write(buffer, offset);
    public virtual ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default) => inner.WriteAsync(buffer, offset, cancellationToken);
    public virtual void Flush() => inner.Flush();
    public virtual void SetLength(long length) => inner.SetLength(length);
    public virtual void PunchHole(long offset, long length) => inner.PunchHole(offset, length);
    public virtual bool ReserveSpace(long offset, long length) => inner.ReserveSpace(offset, length);

    public void Dispose()
    {
        if (ownsInner) inner.Dispose();
    }
}
