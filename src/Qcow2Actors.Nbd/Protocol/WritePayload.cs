using System.Runtime.InteropServices;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// A WRITE's data: a rented array and where in it the data starts. Payloads over
/// <see cref="RequestBuffers.LargeThreshold"/> start on a 4 KiB boundary of a pinned array of the large pool
/// (<see cref="LargeBufferPool"/>: its slack leaves room to move the start), so an export that writes them with
/// O_DIRECT (large writes do, and every write with cache=none) takes the memory as it is instead of copying it
/// into an aligned bounce buffer first.
/// </summary>
internal readonly struct WritePayload
{
    private const int Alignment = 4096;

    private readonly byte[] _array;
    private readonly int _start;
    private readonly int _length;

    private WritePayload(byte[] array, int start, int length)
    {
        _array = array;
        _start = start;
        _length = length;
    }

    /// <summary>A payload of <paramref name="length"/> bytes; give it back with <see cref="Return"/>.</summary>
    public static WritePayload Rent(int length)
    {
        if (length <= RequestBuffers.LargeThreshold) return new(RequestBuffers.Rent(length), 0, length);
        // Asked with a page of room, so the aligned start always fits (a 1 MiB payload still takes a 1 MiB array:
        // the pool's slack is that page).
        var array = RequestBuffers.Rent(length + Alignment);
        return new(array, AlignedStart(array), length);
    }

    /// <summary>The data.</summary>
    public Memory<byte> Memory => _array.AsMemory(_start, _length);

    /// <summary>Gives the array back to the pool it came from.</summary>
    public void Return() => RequestBuffers.Return(_array);

    private static int AlignedStart(byte[] array)
    {
        // The large pool's arrays are pinned: the address holds for the array's life.
        int misalignment = (int)(Marshal.UnsafeAddrOfPinnedArrayElement(array, 0) & (Alignment - 1));
        return misalignment == 0 ? 0 : Alignment - misalignment;
    }
}
