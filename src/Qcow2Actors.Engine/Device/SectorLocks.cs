namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Keeps a read-modify-write of a partial sector from losing another write's bytes: a write that
/// rewrites a sector it only partly owns holds that sector's stripe exclusively, and every other
/// write holds the stripes it covers shared, so two partial writes of one sector, or a partial and a
/// whole one, never interleave their read and write. Whole-sector writes do not exclude each other.
/// </summary>
/// <remarks>
/// Stripes are per lock block (a 4 KiB block, or the sector if larger), hashed onto 64 locks. A
/// write takes its stripes in ascending order, each once, so no two writes can deadlock.
/// </remarks>
internal sealed class SectorLocks : IDisposable
{
    private const int Stripes = 64;
    private readonly ReaderWriterLockSlim[] _locks = new ReaderWriterLockSlim[Stripes];
    private readonly int _blockShift;

    public SectorLocks(int sectorSize)
    {
        _blockShift = System.Numerics.BitOperations.Log2((uint)Math.Max(sectorSize, 4096));
        for (int i = 0; i < Stripes; i++) _locks[i] = new ReaderWriterLockSlim(LockRecursionPolicy.NoRecursion);
    }

    /// <summary>
    /// Takes the stripes of [<paramref name="start"/>, <paramref name="end"/>) (sector-aligned bounds):
    /// exclusively those of <paramref name="partialHead"/> and <paramref name="partialTail"/>
    /// (offsets of sectors the write only partly covers, or -1), shared the rest.
    /// </summary>
    public Held Enter(long start, long end, long partialHead, long partialTail)
    {
        ulong exclusive = 0, covered = 0;
        if (partialHead >= 0) exclusive |= Bit(partialHead);
        if (partialTail >= 0) exclusive |= Bit(partialTail);
        long firstBlock = start >> _blockShift, lastBlock = (end - 1) >> _blockShift;
        if (lastBlock - firstBlock + 1 >= Stripes) covered = ulong.MaxValue;
        else
            for (long b = firstBlock; b <= lastBlock; b++) covered |= 1UL << (int)(b % Stripes);
        covered |= exclusive;
        for (int i = 0; i < Stripes; i++)
        {
            ulong bit = 1UL << i;
            if ((covered & bit) == 0) continue;
            if ((exclusive & bit) != 0) _locks[i].EnterWriteLock();
            else _locks[i].EnterReadLock();
        }
        return new Held(this, covered, exclusive);
    }

    private ulong Bit(long offset) => 1UL << (int)((offset >> _blockShift) % Stripes);

    private void Exit(ulong covered, ulong exclusive)
    {
        for (int i = Stripes - 1; i >= 0; i--)
        {
            ulong bit = 1UL << i;
            if ((covered & bit) == 0) continue;
            if ((exclusive & bit) != 0) _locks[i].ExitWriteLock();
            else _locks[i].ExitReadLock();
        }
    }

    public void Dispose()
    {
        foreach (var l in _locks) l.Dispose();
    }

    /// <summary>The stripes one write holds; disposing releases them.</summary>
    public readonly struct Held(SectorLocks owner, ulong covered, ulong exclusive) : IDisposable
    {
        public void Dispose() => owner.Exit(covered, exclusive);
    }
}
