using System.Collections.Concurrent;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// A WRITE's data: a rented array and where in it the data starts. Payloads over
/// <see cref="RequestBuffers.LargeThreshold"/> start on a 4 KiB boundary of a pinned array, so an export
/// that writes them with O_DIRECT (large writes do, cache=none always) takes the memory as it is instead of
/// copying it into an aligned bounce buffer first; smaller ones come from the shared pool.
/// </summary>
internal readonly struct WritePayload
{
    private const int Alignment = 4096;
    private const int MinClassBytes = RequestBuffers.LargeThreshold * 2;
    private const int ClassCount = 10; // 128 KiB .. 64 MiB
    // A queue depth's worth per size, as RequestBuffers' large pool keeps.
    private const int MaxPerClass = 8;
    private static readonly ConcurrentStack<byte[]>[] Classes = Enumerable.Range(0, ClassCount).Select(_ => new ConcurrentStack<byte[]>()).ToArray();

    private readonly byte[] _array;
    private readonly int _start;
    private readonly int _length;
    private readonly int _class; // -1: from the shared pool (RequestBuffers)

    private WritePayload(byte[] array, int start, int length, int cls)
    {
        _array = array;
        _start = start;
        _length = length;
        _class = cls;
    }

    /// <summary>A payload of <paramref name="length"/> bytes; give it back with <see cref="Return"/>.</summary>
    public static WritePayload Rent(int length)
    {
        if (length <= RequestBuffers.LargeThreshold) return new(RequestBuffers.Rent(length), 0, length, -1);
        int cls = Math.Max(0, BitOperations.Log2((uint)(length - 1) / MinClassBytes) + 1);
        if (cls >= ClassCount) return new(RequestBuffers.Rent(length), 0, length, -1);
        if (!Classes[cls].TryPop(out var array))
            array = GC.AllocateUninitializedArray<byte>((MinClassBytes << cls) + Alignment, pinned: true);
        return new(array, StartOf(array), length, cls);
    }

    /// <summary>The data.</summary>
    public Memory<byte> Memory => _array.AsMemory(_start, _length);

    /// <summary>Gives the array back to the pool it came from.</summary>
    public void Return()
    {
        if (_class < 0) RequestBuffers.Return(_array);
        else if (Classes[_class].Count < MaxPerClass) Classes[_class].Push(_array);
    }

    private static int StartOf(byte[] array)
    {
        // Pinned (the pinned object heap): the address holds for the array's life.
        int misalignment = (int)(Marshal.UnsafeAddrOfPinnedArrayElement(array, 0) & (Alignment - 1));
        return misalignment == 0 ? 0 : Alignment - misalignment;
    }
}
