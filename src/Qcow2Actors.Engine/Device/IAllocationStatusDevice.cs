namespace Qcow2Actors.Engine.Device;

/// <summary>
/// A device that can say which of its ranges hold data, such as an NBD export answering
/// <c>base:allocation</c>. A raw image opened over such a device takes its block status (what
/// <c>map</c> shows and what <c>convert</c> skips) from here instead of from host file holes.
/// </summary>
public interface IAllocationStatusDevice : IBlockDevice
{
    /// <summary>
    /// The run that starts at <paramref name="offset"/>: its length (above 0, at most
    /// <paramref name="length"/>) and whether it is allocated and whether it reads as zeros.
    /// </summary>
    ValueTask<DeviceExtent> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken = default);
}

/// <summary>One run of <see cref="IAllocationStatusDevice.GetAllocationAsync"/>.</summary>
/// <param name="Length">Bytes in the run.</param>
/// <param name="Allocated">False for a hole (NBD_STATE_HOLE).</param>
/// <param name="Zero">True when the run reads as zeros (NBD_STATE_ZERO).</param>
public readonly record struct DeviceExtent(long Length, bool Allocated, bool Zero);
