using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Info;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Check;

/// <summary>
/// The refcounts as stored: the refcount table and, on demand, its blocks (qemu's
/// qcow2_get_refcount). Shared by the check's comparison, the COPIED check and the repair.
/// </summary>
internal sealed class StoredRefcounts : IDisposable
{
    private const int BlockCacheSize = 64;
    private readonly CheckContext _ctx;
    private readonly Dictionary<long, byte[]> _blocks = [];
    private bool _corruptionReported;

    public StoredRefcounts(CheckContext ctx)
    {
        _ctx = ctx;
        Table = ReadTable(ctx.Device, ctx.Meta);
    }

    /// <summary>The refcount table's entries.</summary>
    public RefcountTableEntry[] Table { get; }

    /// <summary>Reads the whole refcount table (at most 8 MiB, validated by Format); the part past the end of the file reads as zeros.</summary>
    public static RefcountTableEntry[] ReadTable(IBlockDevice device, ImageMetadata meta)
    {
        var entries = meta.RefcountTableEntries;
        var table = new RefcountTableEntry[entries];
        // Pooled: every check (three per recovery) reads the table, up to 1 MiB at a time.
        var size = (int)Math.Min(entries * RefcountTableEntry.Size, 1 << 20);
        var buffer = ClusterBuffers.Rent(size);
        try
        {
            ReadTableInto(device, meta, table, buffer.AsSpan(0, size));
        }
        finally
        {
            ClusterBuffers.Return(buffer);
        }
        return table;
    }

    private static void ReadTableInto(IBlockDevice device, ImageMetadata meta, RefcountTableEntry[] table, Span<byte> buffer)
    {
        var entries = meta.RefcountTableEntries;
        for (long done = 0; done < entries * RefcountTableEntry.Size; done += buffer.Length)
        {
            var chunk = buffer[..(int)Math.Min(buffer.Length, entries * RefcountTableEntry.Size - done)];
            ImageMetadata.ReadZeroFilled(device, chunk, (long)meta.RefcountTableOffset + done);
            // Zero entries (no block) stay as the new array has them; a big cluster's table is mostly those.
            var count = chunk.Length / RefcountTableEntry.Size;
            for (var i = 0; i < count; i++)
            {
                var skip = chunk[(i * RefcountTableEntry.Size)..(count * RefcountTableEntry.Size)].IndexOfAnyExcept((byte)0);
                if (skip < 0) break;
                i += skip / RefcountTableEntry.Size;
                table[done / RefcountTableEntry.Size + i] = RefcountTableEntry.Read(chunk, i);
            }
        }
    }

    /// <summary>
    /// The stored refcount of <paramref name="cluster"/>; false (an I/O error to qemu) when the
    /// refcount block pointer is unusable. A cluster beyond the table, or under no block, has refcount 0.
    /// </summary>
    public bool TryGet(long cluster, out ulong refcount)
    {
        refcount = 0;
        var meta = _ctx.Meta;
        var perBlockBits = meta.ClusterBits + 3 - meta.RefcountOrder;
        var tableIndex = cluster >> perBlockBits;
        if (tableIndex >= Table.Length) return true;
        var blockOffset = (ulong)Table[tableIndex].Raw & RefcountTableEntry.OffsetMask;
        if (blockOffset == 0) return true;
        if ((blockOffset & (ulong)(_ctx.ClusterSize - 1)) != 0)
        {
            if (!_corruptionReported)
            {
                _ctx.Error($"qcow2: Image is corrupt: Refblock offset 0x{blockOffset:x} unaligned (reftable index: 0x{tableIndex:x}); further non-fatal corruption events will be suppressed");
                _corruptionReported = true;
            }
            return false;
        }
        if (!_blocks.TryGetValue((long)blockOffset, out var block))
        {
            // Compare walks clusters in order, so a small cache serves nearly every lookup.
            if (_blocks.Count >= BlockCacheSize) ReturnBlocks();
            block = _ctx.RentCluster();
            _ctx.ReadZeroFilled(block, blockOffset > long.MaxValue ? -1 : (long)blockOffset);
            _blocks[(long)blockOffset] = block;
        }
        refcount = RefcountBlock.Get(block, cluster & ((1L << perBlockBits) - 1), meta.RefcountOrder);
        return true;
    }

    /// <summary>Gives the cached refcount blocks back to the pool.</summary>
    public void Dispose() => ReturnBlocks();

    private void ReturnBlocks()
    {
        foreach (var block in _blocks.Values) CheckContext.ReturnCluster(block);
        _blocks.Clear();
    }
}
