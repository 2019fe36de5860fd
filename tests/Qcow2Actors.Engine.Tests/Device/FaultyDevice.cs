using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>A memory device whose next operations can be made to throw, counting every call.</summary>
internal sealed class FaultyDevice(MemoryBlockDevice inner) : IBlockDevice
{
    public Queue<Exception> ReadFaults { get; } = new();
    public Exception? WriteFault { get; set; }
    public Exception? FlushFault { get; set; }
    public int Reads { get; private set; }
    public int Writes { get; private set; }
    public int Flushes { get; private set; }

    public long Length => inner.Length;
    public bool IsReadOnly => inner.IsReadOnly;
    public string Name => inner.Name;

    public int Read(Span<byte> buffer, long offset)
    {
        Reads++;
        if (ReadFaults.TryDequeue(out var e)) throw e;
        return inner.Read(buffer, offset);
    }

    public async ValueTask<int> ReadAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        await Task.Yield();
        return Read(buffer.Span, offset);
    }

    public void Write(ReadOnlySpan<byte> buffer, long offset)
    {
        Writes++;
        if (WriteFault is { } e) throw e;
        inner.Write(buffer, offset);
    }

    public ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken = default)
    {
        Write(buffer.Span, offset);
        return ValueTask.CompletedTask;
    }

    public void Flush()
    {
        Flushes++;
        if (FlushFault is { } e) throw e;
        inner.Flush();
    }

    public void SetLength(long length) => inner.SetLength(length);

    public void Dispose() => inner.Dispose();
}
