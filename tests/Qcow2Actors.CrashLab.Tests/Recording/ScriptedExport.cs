using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.CrashLab.Tests.Recording;

/// <summary>
/// A memory export that tells the test what reaches it: <see cref="OnIssue"/> runs as each change arrives (before the
/// memory export sees it), <see cref="Events"/> lists issue and finish in order, and <see cref="FailNext"/> makes the
/// next change or flush fail with the exception given.
/// </summary>
internal sealed class ScriptedExport(long size = 1 << 20) : INbdExport
{
    private readonly MemoryExport _memory = new("scripted", size);
    private readonly Lock _lock = new();
    private readonly List<string> _events = [];
    private Exception? _failNext;

    public Action<string>? OnIssue { get; set; }

    public IReadOnlyList<string> DirtyBitmaps { get; init; } = [];

    public bool AllocationDepth { get; init; }

    public MemoryExport Memory => _memory;

    public string Name => _memory.Name;

    public long Size => _memory.Size;

    public bool IsReadOnly { get; init; }

    public IReadOnlyList<string> Events { get { lock (_lock) return [.. _events]; } }

    public void FailNext(Exception error) { lock (_lock) _failNext = error; }

    public void Add(string e) { lock (_lock) _events.Add(e); }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Add($"read {offset}+{buffer.Length}");
        return _memory.ReadAsync(offset, buffer, cancellationToken);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        Run($"write {offset}+{data.Length}", () => _memory.WriteAsync(offset, data, fua, cancellationToken));

    public ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        Run($"inline write {offset}+{data.Length}", () => _memory.WriteAsync(offset, data, fua: false, cancellationToken));

    public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken) =>
        Run($"zero {offset}+{length}", () => _memory.WriteZeroesAsync(offset, length, mayUnmap, fastZero, fua, cancellationToken));

    public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) =>
        Run($"trim {offset}+{length}", () => _memory.TrimAsync(offset, length, fua, cancellationToken));

    public ValueTask FlushAsync(CancellationToken cancellationToken) => Run("flush", () => _memory.FlushAsync(cancellationToken));

    public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken)
    {
        Add($"block status {offset}+{length}");
        return _memory.GetBlockStatusAsync(offset, length, cancellationToken);
    }

    public ValueTask<IReadOnlyList<NbdMetaExtent>> GetAllocationDepthAsync(long offset, long length, CancellationToken cancellationToken)
    {
        Add($"allocation depth {offset}+{length}");
        return ValueTask.FromResult<IReadOnlyList<NbdMetaExtent>>([new NbdMetaExtent(length, 1)]);
    }

    public ValueTask<IReadOnlyList<NbdMetaExtent>> GetDirtyBitmapAsync(string bitmap, long offset, long length, CancellationToken cancellationToken)
    {
        Add($"bitmap {bitmap} {offset}+{length}");
        return ValueTask.FromResult<IReadOnlyList<NbdMetaExtent>>([new NbdMetaExtent(length, NbdMetaExtent.Dirty)]);
    }

    private async ValueTask Run(string what, Func<ValueTask> operation)
    {
        Add("issue " + what);
        OnIssue?.Invoke(what);
        Exception? fail;
        lock (_lock) (fail, _failNext) = (_failNext, null);
        // Asynchronous, as a real image is: the recorder must not depend on a synchronous answer.
        await Task.Yield();
        if (fail is not null)
        {
            Add("failed " + what);
            throw fail;
        }
        await operation();
        Add("finished " + what);
    }
}
