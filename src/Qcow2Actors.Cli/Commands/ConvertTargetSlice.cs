namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// The part of a convert target one of several concatenated sources fills (qemu-img convert A B DST):
/// offsets are the source's, moved by where the source starts in the target. The target stays open
/// after the slice (its owner disposes it).
/// </summary>
internal sealed class ConvertTargetSlice(IConvertTarget target, long start) : IConvertTarget
{
    public int ClusterSize => target.ClusterSize;

    public long Size => target.Size - start;

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) => target.WriteAsync(start + offset, data, ct);

    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken ct) => target.WriteZeroesAsync(start + offset, length, ct);

    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct) =>
        target.WriteCompressedAsync(start + offset, data, ct);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
