using System.Numerics;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// A bounded pool of the large request and reply buffers (1 MiB reads and writes). Its arrays are a power of two
/// plus <see cref="Slack"/> bytes, not a power of two as in <see cref="System.Buffers.ArrayPool{T}"/>: a read reply
/// needs its header room in front of the data, and 1 MiB plus a 16-byte header took a 2 MiB array there, so a
/// seqread after a seqwrite held a second queue depth of arrays, twice as large (16 MiB more peak RSS of serve).
/// Here a 1 MiB write payload and a 1 MiB read reply share the same arrays. The arrays are pinned (the pinned
/// object heap), so a write payload can start at the first 4 KiB boundary inside the slack and keep that
/// address (<see cref="WritePayload"/>).
/// </summary>
internal sealed class LargeBufferPool
{
    /// <summary>Room beyond the power of two: more than any reply header put in front of the data, and enough to move a payload's start to a 4 KiB boundary.</summary>
    public const int Slack = 4096;

    private readonly int _minimumShift;
    private readonly int _maxArraysPerBucket;
    private readonly Stack<byte[]>[] _buckets;

    /// <param name="minimumLength">Smallest power of two served (arrays asked for below it get this size).</param>
    /// <param name="maximumLength">Largest power of two kept; longer arrays are allocated and dropped.</param>
    /// <param name="maxArraysPerBucket">Most arrays kept per size: the rest are left to the collector.</param>
    public LargeBufferPool(int minimumLength, int maximumLength, int maxArraysPerBucket)
    {
        _minimumShift = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)minimumLength));
        int maximumShift = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)maximumLength));
        _maxArraysPerBucket = maxArraysPerBucket;
        _buckets = new Stack<byte[]>[maximumShift - _minimumShift + 1];
        for (int i = 0; i < _buckets.Length; i++) _buckets[i] = new Stack<byte[]>(maxArraysPerBucket);
    }

    /// <summary>An array of at least <paramref name="length"/> bytes (not cleared); give it back with <see cref="Return"/>.</summary>
    public byte[] Rent(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        int bucket = BucketOf(length);
        if (bucket >= _buckets.Length) return GC.AllocateUninitializedArray<byte>(length, pinned: true);
        var stack = _buckets[bucket];
        lock (stack)
        {
            if (stack.TryPop(out var pooled)) return pooled;
        }
        return GC.AllocateUninitializedArray<byte>(LengthOf(bucket), pinned: true);
    }

    /// <summary>Keeps <paramref name="buffer"/> for a later <see cref="Rent"/> if it is one of this pool's sizes and its bucket has room.</summary>
    public void Return(byte[] buffer)
    {
        int bucket = BucketOf(buffer.Length);
        if (bucket >= _buckets.Length || LengthOf(bucket) != buffer.Length) return; // not one of ours: the collector's
        var stack = _buckets[bucket];
        lock (stack)
        {
            if (stack.Count < _maxArraysPerBucket) stack.Push(buffer);
        }
    }

    /// <summary>Arrays held for <paramref name="length"/>-byte rents (for tests).</summary>
    internal int Pooled(int length)
    {
        int bucket = BucketOf(length);
        if (bucket >= _buckets.Length) return 0;
        lock (_buckets[bucket]) return _buckets[bucket].Count;
    }

    private int BucketOf(int length)
    {
        uint data = (uint)Math.Max(length - Slack, 1);
        int shift = BitOperations.Log2(BitOperations.RoundUpToPowerOf2(data));
        return Math.Max(shift - _minimumShift, 0);
    }

    private int LengthOf(int bucket) => (1 << (bucket + _minimumShift)) + Slack;
}
