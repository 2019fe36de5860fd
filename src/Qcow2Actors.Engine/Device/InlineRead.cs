namespace Qcow2Actors.Engine.Device;

/// <summary>
/// <see cref="IBlockDevice.ReadAsync"/> for devices whose reads are synchronous: the read runs on
/// the calling thread (no pool hop; see <see cref="FileBlockDevice.ReadAsync"/> for why) and its
/// failure comes back in the task, as an asynchronous read's would.
/// </summary>
internal static class InlineRead
{
    public static ValueTask<int> Run(IBlockDevice device, Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested) return ValueTask.FromCanceled<int>(cancellationToken);
        try
        {
            return new ValueTask<int>(device.Read(buffer.Span, offset));
        }
        catch (Exception ex)
        {
            return ValueTask.FromException<int>(ex);
        }
    }
}
