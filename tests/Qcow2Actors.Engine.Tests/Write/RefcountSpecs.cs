using Akka.Actor;
using Akka.TestKit.Xunit2;
using Qcow2Actors.Engine.Compression;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>Images on memory devices, made by the same creator as real ones.</summary>
internal static class MemoryImages
{
    public static (MemoryBlockDevice Device, ImageHeaderBlock Block) Create(int refcountBits, int clusterSize = 4096, long size = 16L << 20)
    {
        var options = new Qcow2CreateOptions { Size = size, ClusterSize = clusterSize, RefcountBits = refcountBits };
        var block = ImageCreator.BuildHeaderBlock(options);
        var device = new MemoryBlockDevice($"refcount-{refcountBits}");
        ImageCreator.Write(device, block, options);
        return (device, block);
    }

    /// <summary>Writes the refcount table location into the header on the device, as a checkpoint does.</summary>
    public static void WriteBackWithHeader(RefcountState state, IBlockDevice device, ImageHeaderBlock block)
    {
        state.WriteBack();
        block.Header.RefcountTableOffset = state.TableOffset;
        block.Header.RefcountTableClusters = state.TableClusters;
        var cluster = new byte[block.Header.ClusterSize];
        block.Write(cluster);
        device.Write(cluster.AsSpan(0, block.EncodedLength), 0);
    }

    /// <summary>A device handle the engine may dispose without closing the memory behind it.</summary>
    public sealed class Handle(MemoryBlockDevice inner) : DelegatingDevice(inner, ownsInner: false);
}

/// <summary>
/// RefcountState, the refcount actor's pure core, at every width qcow2 allows (1..64 bits):
/// runs, overflow, quarantine, block creation and table growth, and what it writes back
/// reading the same in a fresh state.
/// </summary>
public sealed class RefcountStateSpecs
{
    public static TheoryData<int> Widths => new() { 1, 2, 4, 8, 16, 32, 64 };

    [Theory]
    [MemberData(nameof(Widths))]
    public void Allocations_are_contiguous_runs_at_refcount_one_each_recorded(int bits)
    {
        var (device, block) = MemoryImages.Create(bits);
        var state = new RefcountState(device, block.Header);
        var records = new List<MetadataRecord>();
        long cs = state.ClusterSize;

        long a = state.Allocate(3, records, out bool freshA);
        long b = state.Allocate(2, records, out _);

        Assert.True(freshA, "clusters past the end of the file are fresh");
        Assert.True(a >= device.Length, "the first allocation lies past the image's own metadata");
        Assert.Equal(a + 3 * cs, b);
        for (long c = a / cs; c < b / cs + 2; c++)
        {
            Assert.Equal(1UL, state.Get(c));
            Assert.Contains(new SetRefcount(c, 1), records);
        }
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void A_refcount_rises_to_the_width_maximum_and_no_further(int bits)
    {
        var (device, block) = MemoryImages.Create(bits);
        var state = new RefcountState(device, block.Header);
        var records = new List<MetadataRecord>();
        long c = state.Allocate(1, records, out _) / state.ClusterSize;
        ulong max = RefcountBlock.MaxValue(bits switch { 1 => 0, 2 => 1, 4 => 2, 8 => 3, 16 => 4, 32 => 5, _ => 6 });
        Assert.Equal(max, state.MaxRefcount);

        state.Set(c, max, records);
        Assert.Equal(max, state.Get(c));
        Assert.Throws<Qcow2ImageCorruptException>(() => state.Adjust(c, +1, records));
        Assert.Equal(max, state.Get(c));
        Assert.Equal(max - 1, state.Adjust(c, -1, records));
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void A_freed_cluster_stays_quarantined_until_released(int bits)
    {
        var (device, block) = MemoryImages.Create(bits);
        var state = new RefcountState(device, block.Header);
        var records = new List<MetadataRecord>();
        long cs = state.ClusterSize;
        long freed = state.Allocate(1, records, out _);
        state.Allocate(1, records, out _);

        Assert.Equal(0UL, state.Adjust(freed / cs, -1, records));
        Assert.Equal([freed / cs], state.QuarantinedClusters());
        for (int i = 0; i < 4; i++)
            Assert.NotEqual(freed, state.Allocate(1, records, out _));

        state.Release([freed / cs]);
        Assert.Equal(0, state.QuarantineCount);
        Assert.Equal(freed, state.Allocate(1, records, out bool fresh));
        Assert.False(fresh, "a reused cluster is not known to read as zeros");
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void Refcounts_written_back_read_the_same_in_a_fresh_state(int bits)
    {
        var (device, block) = MemoryImages.Create(bits);
        var state = new RefcountState(device, block.Header);
        var records = new List<MetadataRecord>();
        long cs = state.ClusterSize;
        long first = state.Allocate(10, records, out _) / cs;
        if (state.MaxRefcount > 1) state.Adjust(first + 1, +1, records);
        state.Adjust(first + 2, -1, records);
        long end = state.AllocatedEnd / cs;

        MemoryImages.WriteBackWithHeader(state, device, block);
        Assert.False(state.IsDirty);
        var reread = new RefcountState(device, block.Header);
        for (long c = 0; c < end + 4; c++) Assert.Equal(state.Get(c), reread.Get(c));
    }

    [Theory]
    [MemberData(nameof(Widths))]
    public void Allocating_past_the_table_creates_self_describing_blocks_and_moves_the_table(int bits)
    {
        // 512-byte clusters keep the covered range small: one table cluster holds 64 block
        // entries, each block 4096 / bits entries.
        var (device, block) = MemoryImages.Create(bits, clusterSize: 512, size: 1L << 30);
        var state = new RefcountState(device, block.Header);
        var records = new List<MetadataRecord>();
        long cs = state.ClusterSize;
        long perBlock = RefcountBlock.EntriesPerBlock(9, block.Header.RefcountOrder);
        long covered = state.TableClusters * cs / 8 * perBlock;
        long oldTable = state.TableOffset;
        int oldTableClusters = state.TableClusters;

        var runs = new List<(long Start, int Count)>();
        while (state.AllocatedEnd / cs <= covered + perBlock)
        {
            int count = (int)Math.Max(1, perBlock / 2);
            runs.Add((state.Allocate(count, records, out _) / cs, count));
        }

        var newBlocks = records.OfType<NewTable>().Where(t => t.Kind == TableKind.RefcountBlock).ToList();
        Assert.NotEmpty(newBlocks);
        foreach (var nb in newBlocks)
        {
            Assert.Equal(cs, nb.Length);
            Assert.Equal(1UL, state.Get(nb.Offset / cs)); // a new block counts itself
        }
        var moved = Assert.Single(records.OfType<NewTable>(), t => t.Kind == TableKind.RefcountTable);
        Assert.Equal(moved.Offset, state.TableOffset);
        Assert.Contains(new SetHeaderField(HeaderField.RefcountTableOffset, (ulong)moved.Offset), records);
        Assert.Contains(new SetHeaderField(HeaderField.RefcountTableClusters, (ulong)state.TableClusters), records);
        Assert.True(state.TableClusters > oldTableClusters);
        for (long c = oldTable / cs; c < oldTable / cs + oldTableClusters; c++)
        {
            Assert.Equal(0UL, state.Get(c));
            Assert.Contains(c, state.QuarantinedClusters()); // the old table is free only once that is durable
        }
        for (long c = moved.Offset / cs; c < moved.Offset / cs + state.TableClusters; c++)
            Assert.Equal(1UL, state.Get(c));
        foreach (var (start, count) in runs)
            for (long c = start; c < start + count; c++) Assert.Equal(1UL, state.Get(c));

        MemoryImages.WriteBackWithHeader(state, device, block);
        var reread = new RefcountState(device, block.Header);
        long end = state.AllocatedEnd / cs;
        for (long c = 0; c < end; c++)
        {
            if (state.Get(c) != reread.Get(c)) Assert.Fail($"cluster {c}: {state.Get(c)} in memory, {reread.Get(c)} after write-back");
        }
    }
}

/// <summary>Runs as long as one refcount block's range, which a whole-table guest write needs at 64-bit width.</summary>
public sealed class RefcountRunLengthSpecs
{
    [Fact]
    public void A_run_as_long_as_a_refcount_block_range_is_allocated_in_fresh_space()
    {
        // At 64-bit width a block covers cs/8 clusters, exactly one L2 table's worth: a guest
        // write spanning a whole table asks for such a run. In fresh space each new block takes
        // the first cluster of its own range, so no run of that length may ever be found there.
        var (device, block) = MemoryImages.Create(64, clusterSize: 512, size: 1L << 30);
        var state = new RefcountState(device, block.Header);
        var records = new List<MetadataRecord>();
        long perBlock = RefcountBlock.EntriesPerBlock(9, block.Header.RefcountOrder);
        long start = state.Allocate((int)perBlock, records, out _) / state.ClusterSize;
        for (long c = start; c < start + perBlock; c++) Assert.Equal(1UL, state.Get(c));
    }
}

/// <summary>The refcount actor, its records read from the image's journal inbox (no journal actor runs).</summary>
public sealed class RefcountActorSpecs : TestKit
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    private async Task<(Akka.Actor.IActorRef Actor, JournalInbox Journal, long ClusterSize)> Start(int bits)
    {
        var (device, block) = MemoryImages.Create(bits);
        var options = new Qcow2OpenOptions { ReadOnly = false, Format = "qcow2", DeviceFactory = (_, _) => new MemoryImages.Handle(device) };
        var opened = await ImageOpener.OpenAsync($"/memory/refcount-{bits}.qcow2", options, default);
        var layer = (Qcow2Layer)opened.Layer;
        var ctx = new ImageContext(layer.FileName, layer.File, null, opened.HeaderBlock!, layer,
            CompressionCodecs.For(0), new EngineSettings());
        ctx.Allocator = new RefcountAllocator(ctx, new RefcountState(layer.File, opened.HeaderBlock!.Header));
        var actor = Sys.ActorOf(RefcountActor.Props(ctx, ctx.Allocator));
        ctx.Refcounts = actor;
        return (actor, ctx.JournalRecords, block.Header.ClusterSize);
    }

    private static async Task<T> Call<T>(Akka.Actor.IActorRef actor, Func<TaskCompletionSource<T>, object> message)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        actor.Tell(message(tcs));
        return await tcs.Task.WaitAsync(Timeout);
    }

    [Fact]
    public async Task Allocations_are_journaled_as_absolute_refcounts()
    {
        var (actor, journal, cs) = await Start(16);
        var alloc = await Call<Allocation>(actor, r => new AllocateClusters(3, r));

        var append = journal.Take()!;
        Assert.Empty(append.Freed);
        var records = append.Batch.ToBatch().Records;
        for (long c = alloc.Offset / cs; c < alloc.Offset / cs + 3; c++)
            Assert.Contains(new SetRefcount(c, 1), records);
        var counts = await Call<ulong[]>(actor, r => new GetRefcounts([.. Enumerable.Range(0, 4).Select(i => alloc.Offset / cs + i)], r));
        Assert.Equal(new ulong[] { 1, 1, 1, 0 }, counts);
    }

    [Fact]
    public async Task A_freed_cluster_is_reused_only_after_ReleaseQuarantine()
    {
        var (actor, journal, cs) = await Start(16);
        var first = await Call<Allocation>(actor, r => new AllocateClusters(1, r));
        Assert.NotNull(journal.Take());
        long cluster = first.Offset / cs;

        var after = await Call<ulong[]>(actor, r => new AdjustRefcounts([cluster], -1, r));
        Assert.Equal(new ulong[] { 0 }, after);
        var freeing = journal.Take()!;
        Assert.Equal(new[] { cluster }, freeing.Freed);
        Assert.Contains(new SetRefcount(cluster, 0), freeing.Batch.ToBatch().Records);

        var meanwhile = await Call<Allocation>(actor, r => new AllocateClusters(1, r));
        Assert.NotEqual(first.Offset, meanwhile.Offset);

        actor.Tell(new ReleaseQuarantine([cluster]));
        var reused = await Call<Allocation>(actor, r => new AllocateClusters(1, r));
        Assert.Equal(first.Offset, reused.Offset);
        Assert.False(reused.Fresh);
    }

    [Fact]
    public async Task Compressed_allocations_pack_into_one_cluster_each_adding_a_reference()
    {
        var (actor, journal, cs) = await Start(16);
        long a = await Call<long>(actor, r => new AllocateCompressedBytes(1000, r));
        long b = await Call<long>(actor, r => new AllocateCompressedBytes(2000, r));
        long c = await Call<long>(actor, r => new AllocateCompressedBytes(2000, r)); // does not fit the rest

        Assert.Equal(a + 1000, b);
        Assert.Equal(0, c % cs);
        var counts = await Call<ulong[]>(actor, r => new GetRefcounts([a / cs, c / cs], r));
        Assert.Equal(new ulong[] { 2, 1 }, counts);
        var records = journal.Take()!.Batch.ToBatch().Records;
        Assert.Contains(new SetRefcount(a / cs, 2), records);
        Assert.Contains(new SetRefcount(c / cs, 1), records);
    }

    [Fact]
    public async Task Compressed_packing_stops_at_the_one_bit_refcount_maximum()
    {
        var (actor, _, cs) = await Start(1);
        long a = await Call<long>(actor, r => new AllocateCompressedBytes(100, r));
        long b = await Call<long>(actor, r => new AllocateCompressedBytes(100, r));
        Assert.NotEqual(a / cs, b / cs);
        var counts = await Call<ulong[]>(actor, r => new GetRefcounts([a / cs, b / cs], r));
        Assert.Equal(new ulong[] { 1, 1 }, counts);
    }

    [Fact]
    public async Task Write_back_replies_with_the_table_location()
    {
        var (actor, _, _) = await Start(16);
        await Call<Allocation>(actor, r => new AllocateClusters(2, r));
        var (offset, clusters) = await Call<(long, int)>(actor, r => new WriteBackRefcounts(r));
        Assert.True(offset > 0);
        Assert.True(clusters >= 1);
    }
}
