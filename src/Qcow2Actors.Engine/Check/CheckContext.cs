using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Info;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Check;

/// <summary>Stops a check early; the message is qemu-img's "Check failed: &lt;reason&gt;".</summary>
internal sealed class AbortCheck(string reason) : Exception(reason);

/// <summary>
/// What the parts of one check share: the image, its decoded metadata, the result being filled
/// in, and the byte-level reads (past the end of the file: zeros, as QEMU's file driver reads).
/// </summary>
internal sealed class CheckContext(IBlockDevice device, ImageMetadata meta, CheckResult result, CheckPass pass)
{
    public IBlockDevice Device { get; } = device;
    public ImageMetadata Meta { get; } = meta;
    public CheckResult Result { get; } = result;
    public CheckPass Pass { get; } = pass;
    public long ClusterSize { get; } = meta.ClusterSize;
    public int ClusterBits { get; } = meta.ClusterBits;
    public long FileLength { get; } = device.Length;

    public void Error(string message) => Result._messages.Add(message);

    public void Corruption(string message)
    {
        Result.Corruptions++;
        Error(message);
    }

    /// <summary>
    /// A cluster-sized buffer from <see cref="ClusterBuffers"/> (contents arbitrary; give it back with
    /// <see cref="ReturnCluster"/>). A check of a 2 MiB-cluster image needs several such buffers,
    /// and fresh ones cost page faults on every check.
    /// </summary>
    public byte[] RentCluster()
    {
        var buffer = ClusterBuffers.Rent((int)ClusterSize);
        // Cluster sizes are powers of two, which the pool hands out exactly; callers rely on the length.
        return buffer.Length == ClusterSize ? buffer : new byte[ClusterSize];
    }

    /// <summary>Gives back a buffer from <see cref="RentCluster"/>.</summary>
    public static void ReturnCluster(byte[] buffer) => ClusterBuffers.Return(buffer);

    public void ReadZeroFilled(Span<byte> buffer, long offset)
    {
        if (offset < 0) { buffer.Clear(); return; }
        ImageMetadata.ReadZeroFilled(Device, buffer, offset);
    }

    /// <summary>Reads an L1 table; entries past the end of the file are zero and are not allocated for.</summary>
    public L1Entry[] ReadL1(ulong offset, uint size)
    {
        var inFile = offset >= (ulong)FileLength ? 0 : (long)Math.Min((ulong)size, ((ulong)FileLength - offset + 7) / 8);
        var bytes = new byte[inFile * L1Entry.Size];
        ReadZeroFilled(bytes, (long)offset);
        var table = new L1Entry[inFile];
        for (var i = 0; i < table.Length; i++) table[i] = L1Entry.Read(bytes, i);
        return table;
    }

    /// <summary>Reads one L2 table; an I/O error ends the check with <paramref name="failure"/> as qemu-img words it.</summary>
    public void ReadL2(byte[] l2, ulong l2Offset, string failure)
    {
        try
        {
            ReadZeroFilled(l2, (long)l2Offset);
        }
        catch (IOException)
        {
            Error(failure);
            Result.CheckErrors++;
            throw new AbortCheck("Input/output error");
        }
    }

    /// <summary>
    /// The first entry at or after <paramref name="from"/> with a nonzero byte, or the table's entry count.
    /// An all-zero entry is unallocated with nothing to check or count, and a big cluster's table is
    /// mostly such entries: the walks skip them at memory speed.
    /// </summary>
    public long NextNonZeroL2Entry(byte[] l2, long from)
    {
        var size = Meta.L2EntryBytes;
        var end = Meta.L2Entries;
        if (from >= end) return end;
        var found = l2.AsSpan((int)(from * size), (int)((end - from) * size)).IndexOfAnyExcept((byte)0);
        return found < 0 ? end : from + found / size;
    }

    public L2Entry L2At(byte[] l2, long index) => L2Table.ReadEntry(l2, (int)index, Meta.ExtendedL2);

    public L2EntryKind Classify(L2Entry entry) => entry.GetKind(Meta.Version, Meta.ExtendedL2, Meta.HasDataFile);

    /// <summary>
    /// qemu's overlap check before rewriting an L2 table: never write over the header, the
    /// active L1, the refcount table or a refcount block (a corrupt L1 entry may point there).
    /// </summary>
    public bool MayRewriteL2(ulong l2Offset, IReadOnlyList<RefcountTableEntry> refcountTable)
    {
        var cs = (ulong)ClusterSize;
        if ((l2Offset & (cs - 1)) != 0 || l2Offset == 0 || l2Offset >= (ulong)FileLength) return false;
        static bool Inside(ulong offset, ulong start, ulong bytes) => bytes > 0 && offset + 1 > start && offset < start + bytes;
        var l2End = l2Offset + cs - 1;
        bool Hits(ulong start, ulong bytes) => Inside(l2Offset, start, bytes) || Inside(l2End, start, bytes) || Inside(start, l2Offset, cs);
        if (Hits(Meta.L1TableOffset, (ulong)Meta.L1Size * 8)) return false;
        if (Hits(Meta.RefcountTableOffset, (ulong)Meta.RefcountTableEntries * 8)) return false;
        foreach (var entry in refcountTable)
        {
            var block = (ulong)entry.BlockOffset;
            if (block != 0 && Hits(block, cs)) return false;
        }
        return true;
    }
}
