using Qcow2Actors.Cli.Commands;

namespace Qcow2Actors.Cli.Tests;

/// <summary>
/// A guest disk in memory that records every call, so the interpreter's parsing and
/// dispatching are tested without an image; out-of-range requests fail as Qcow2Image's do.
/// </summary>
internal sealed class MemoryIoTarget(int length, bool readOnly = false) : IIoTarget
{
    public byte[] Data { get; } = new byte[length];
    public List<string> Calls { get; } = [];
    public Exception? FailNext { get; set; }

    public long Length => Data.Length;
    public bool IsReadOnly { get; } = readOnly;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Record($"read {offset} {buffer.Length}", offset, buffer.Length);
        Data.AsSpan((int)offset, buffer.Length).CopyTo(buffer.Span);
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        Record($"write {offset} {data.Length}{(fua ? " fua" : "")}", offset, data.Length);
        data.Span.CopyTo(Data.AsSpan((int)offset));
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteZeroesAsync(long offset, long length, bool unmap, bool fua, CancellationToken cancellationToken)
    {
        Record($"zero {offset} {length}{(unmap ? " unmap" : "")}{(fua ? " fua" : "")}", offset, length);
        Data.AsSpan((int)offset, (int)length).Clear();
        return ValueTask.CompletedTask;
    }

    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken)
    {
        Record($"discard {offset} {length}", offset, length);
        Data.AsSpan((int)offset, (int)length).Clear();
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        Record($"compressed {offset} {data.Length}", offset, data.Length);
        data.Span.CopyTo(Data.AsSpan((int)offset));
        return ValueTask.CompletedTask;
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        Record("flush", 0, 0);
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private void Record(string call, long offset, long length)
    {
        if (FailNext is { } failure)
        {
            FailNext = null;
            throw failure;
        }
        if (offset < 0 || length < 0 || offset + length > Data.Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the disk");
        Calls.Add(call);
    }
}

/// <summary>A clock on which every measured request takes exactly one millisecond.</summary>
internal sealed class OneMillisecondClock : TimeProvider
{
    private long _now;
    public override long TimestampFrequency => 1_000_000;
    public override long GetTimestamp() => _now += 1000;
}
