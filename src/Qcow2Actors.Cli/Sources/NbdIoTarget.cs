using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Nbd.Client;

namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// <see cref="IIoTarget"/> over an NBD export read as raw bytes (what qemu-io does with an nbd://
/// image it probes as raw): reads, writes (FUA when asked), write-zeroes, trims and flushes go to
/// the server as the NBD commands of the same name.
/// </summary>
internal sealed class NbdIoTarget(NbdClient client, bool readOnly) : IIoTarget
{
    /// <inheritdoc/>
    public long Length => client.Size;

    /// <inheritdoc/>
    public bool IsReadOnly => readOnly;

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        CheckRange(offset, buffer.Length);
        return buffer.Length == 0 ? ValueTask.CompletedTask : client.ReadAsync(offset, buffer, cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
    {
        CheckRange(offset, data.Length);
        return data.Length == 0 ? ValueTask.CompletedTask : client.WriteAsync(offset, data, fua, cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask WriteZeroesAsync(long offset, long length, bool unmap, bool fua, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        return length == 0 ? ValueTask.CompletedTask : client.WriteZeroesAsync(offset, length, mayTrim: unmap, fua, cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        return length == 0 ? ValueTask.CompletedTask : client.TrimAsync(offset, length, cancellationToken);
    }

    /// <inheritdoc/>
    public ValueTask WriteCompressedAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        throw new NotSupportedException("raw images cannot store compressed data");

    /// <inheritdoc/>
    public ValueTask FlushAsync(CancellationToken cancellationToken) => client.FlushAsync(cancellationToken);

    /// <inheritdoc/>
    public ValueTask DisposeAsync() => client.DisposeAsync();

    // As for a raw file: a request past the end is refused before it reaches the server.
    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the {Length}-byte disk");
    }
}
