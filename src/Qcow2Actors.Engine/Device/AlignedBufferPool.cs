using System.Collections.Concurrent;
using System.Numerics;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Pooled buffers whose first byte is 4096-aligned, for O_DIRECT I/O whose caller's memory or
/// range is not aligned (<see cref="DirectFileBlockDevice"/>). Each buffer is a pinned array (the
/// pinned object heap never moves it, and the GC frees it: nothing to leak) sliced at its first
/// aligned byte. One pool serves every device in the process, and it keeps at most
/// <see cref="MaxRetainedBytes"/> so idle images hold no bounce memory of their own.
/// </summary>
internal static class AlignedBufferPool
{
    /// <summary>Alignment of every buffer: the largest logical sector Linux has.</summary>
    public const int Alignment = 4096;

    /// <summary>Largest buffer handed out; larger requests are done in pieces of this size.</summary>
    public const int MaxBufferSize = 1 << 20;

    private const int MaxRetainedBytes = 4 << 20;
    private static readonly int ClassCount = BitOperations.Log2(MaxBufferSize / Alignment) + 1;
    private static readonly ConcurrentStack<byte[]>[] Classes = CreateClasses();
    private static long _retainedBytes;

    private static ConcurrentStack<byte[]>[] CreateClasses()
    {
        var classes = new ConcurrentStack<byte[]>[ClassCount];
        for (int i = 0; i < classes.Length; i++) classes[i] = new ConcurrentStack<byte[]>();
        return classes;
    }

    /// <summary>A buffer of at least <paramref name="size"/> bytes (at most <see cref="MaxBufferSize"/>), aligned; dispose it to give it back.</summary>
    public static Lease Rent(int size)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, MaxBufferSize);
        int cls = ClassOf(size);
        if (Classes[cls].TryPop(out var array))
        {
            Interlocked.Add(ref _retainedBytes, -(Alignment << cls));
            return new Lease(array, cls);
        }
        return new Lease(GC.AllocateUninitializedArray<byte>((Alignment << cls) + Alignment, pinned: true), cls);
    }

    private static int ClassOf(int size) =>
        size <= Alignment ? 0 : BitOperations.Log2((uint)(size - 1) / Alignment) + 1;

    private static void Return(byte[] array, int cls)
    {
        int bytes = Alignment << cls;
        if (Interlocked.Add(ref _retainedBytes, bytes) > MaxRetainedBytes)
        {
            Interlocked.Add(ref _retainedBytes, -bytes);
            return;
        }
        Classes[cls].Push(array);
    }

    /// <summary>A rented buffer; <see cref="Span"/> starts on an aligned address.</summary>
    public readonly struct Lease(byte[] array, int cls) : IDisposable
    {
        private readonly int _start = StartOf(array);

        public Span<byte> Span => array.AsSpan(_start, Alignment << cls);

        public void Dispose() => Return(array, cls);

        private static unsafe int StartOf(byte[] array)
        {
            // Pinned: the address is fixed for the array's life.
            fixed (byte* p = array)
            {
                int misalignment = (int)((nuint)p & (Alignment - 1));
                return misalignment == 0 ? 0 : Alignment - misalignment;
            }
        }
    }
}
