using Qcow2Actors.Engine;

namespace Qcow2Actors.Chaos.Workloads;

/// <summary>
/// The write engine as a crash-workload target: one line per method onto <see cref="Qcow2Image"/>.
/// Disposing it closes the image cleanly (checkpoint, journal removed) when it owns the image;
/// a crash test instead abandons the image and tears the host down.
/// </summary>
public sealed class Qcow2ChaosTarget : IChaosTarget
{
    private readonly bool _ownsImage;

    /// <summary>Drives <paramref name="image"/>; closes it on dispose when <paramref name="ownsImage"/>.</summary>
    public Qcow2ChaosTarget(Qcow2Image image, bool ownsImage = true)
    {
        ArgumentNullException.ThrowIfNull(image);
        Image = image;
        _ownsImage = ownsImage;
    }

    /// <summary>The image driven.</summary>
    public Qcow2Image Image { get; }

    /// <inheritdoc />
    public long VirtualSize => Image.VirtualSize;

    /// <inheritdoc />
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default) =>
        Image.WriteAsync(offset, data, fua, cancellationToken);

    /// <inheritdoc />
    public ValueTask WriteZeroesAsync(long offset, long length, bool unmap = false, bool fua = false, CancellationToken cancellationToken = default) =>
        Image.WriteZeroesAsync(offset, length, unmap, fua, cancellationToken);

    /// <inheritdoc />
    public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
        Image.DiscardAsync(offset, length, cancellationToken);

    /// <inheritdoc />
    public ValueTask FlushAsync(CancellationToken cancellationToken = default) => Image.FlushAsync(cancellationToken);

    /// <inheritdoc />
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Image.ReadAsync(offset, buffer, cancellationToken);

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _ownsImage ? Image.DisposeAsync() : ValueTask.CompletedTask;
}
