using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// A device that passes every call to <paramref name="inner"/>; a test decorator overrides only
/// the operations it gates, fails or records (one core each: every read, sync or async, goes
/// through <see cref="ReadCoreAsync"/>), so what it changes stands out from what it forwards.
/// With <paramref name="ownsInner"/> false, disposing it leaves <paramref name="inner"/> open
/// (a handle the engine may close while the test still reads the memory behind it).
/// </summary>
public abstract class DelegatingDevice(IBlockDevice inner, bool ownsInner = true) : BlockDevice
{
    /// <summary>The device calls are passed to.</summary>
    protected IBlockDevice Inner => inner;

    public override long Length => inner.Length;
    public override bool IsReadOnly => inner.IsReadOnly;
    public override string Name => inner.Name;
    protected override ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken) => inner.ReadAsync(buffer, offset, cancellationToken);
    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken) => inner.WriteAsync(buffer, offset, cancellationToken);
    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
    public override void SetLength(long length) => inner.SetLength(length);
    public override void PunchHole(long offset, long length) => inner.PunchHole(offset, length);
    public override bool ReserveSpace(long offset, long length) => inner.ReserveSpace(offset, length);

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing && ownsInner) inner.Dispose();
    }
}
