using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>A memory device whose next operations can be made to throw, counting every call.</summary>
internal sealed class FaultyDevice(MemoryBlockDevice inner) : BlockDevice
{
    public Queue<Exception> ReadFaults { get; } = new();
    public Exception? WriteFault { get; set; }

    /// <summary>The first write (counting from 1, as <see cref="Writes"/> does) that <see cref="WriteFault"/> fails; 0: every write.</summary>
    public int FailFromWrite { get; set; }
    public Exception? FlushFault { get; set; }
    public int Reads { get; private set; }
    public int Writes { get; private set; }
    public int Flushes { get; private set; }

    public override long Length => inner.Length;
    public override bool IsReadOnly => inner.IsReadOnly;
    public override string Name => inner.Name;

    // Asynchronous on purpose (a hop before the read), so callers are exercised with a core that does not complete at once.
    protected override async ValueTask<int> ReadCoreAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        await Task.Yield();
        Reads++;
        if (ReadFaults.TryDequeue(out var e)) throw e;
        return await inner.ReadAsync(buffer, offset, cancellationToken);
    }

    protected override ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        Writes++;
        if (WriteFault is { } e && Writes >= FailFromWrite) throw e;
        return inner.WriteAsync(buffer, offset, cancellationToken);
    }

    protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
    {
        Flushes++;
        if (FlushFault is { } e) throw e;
        return inner.FlushAsync(cancellationToken);
    }

    public override void SetLength(long length) => inner.SetLength(length);

    /// <summary>The bytes as they are now.</summary>
    public byte[] ToArray() => inner.ToArray();

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) inner.Dispose();
    }
}
