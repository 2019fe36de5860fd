using System.Buffers.Binary;
using System.Text;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// LIST/SET_META_CONTEXT for qemu:allocation-depth and qemu:dirty-bitmap:NAME beside base:allocation,
/// negotiated as qemu-nbd 7.2 negotiates them, and BLOCK_STATUS answering every selected context.
/// </summary>
public sealed class MetaContextTests
{
    private const int Size = 1024 * 1024;
    private const uint EINVAL = 22, EIO = 5;

    /// <summary>A memory export offering allocation depth and two bitmaps with fixed, scripted extents.</summary>
    private sealed class ContextExport(INbdExport inner, bool depth = true, params string[] bitmaps) : DelegatingExport(inner), INbdExport
    {
        public List<NbdMetaExtent> Depth { get; init; } = [new(MetaContextTests.Size, 1)];
        public Dictionary<string, List<NbdMetaExtent>> Bitmap { get; init; } = [];
        public bool AllocationDepth => depth;
        public IReadOnlyList<string> DirtyBitmaps => bitmaps;

        public ValueTask<IReadOnlyList<NbdMetaExtent>> GetAllocationDepthAsync(long offset, long length, CancellationToken cancellationToken) =>
            ValueTask.FromResult(From(Depth, offset));

        public ValueTask<IReadOnlyList<NbdMetaExtent>> GetDirtyBitmapAsync(string bitmap, long offset, long length, CancellationToken cancellationToken) =>
            Bitmap.TryGetValue(bitmap, out var runs)
                ? ValueTask.FromResult(From(runs, offset))
                : ValueTask.FromException<IReadOnlyList<NbdMetaExtent>>(new IOException($"bitmap '{bitmap}' cannot be read"));

        /// <summary>The scripted runs from <paramref name="offset"/> on, the first cut where the offset falls.</summary>
        private static IReadOnlyList<NbdMetaExtent> From(List<NbdMetaExtent> runs, long offset)
        {
            var result = new List<NbdMetaExtent>();
            long start = 0;
            foreach (var run in runs)
            {
                long end = start + run.Length;
                if (end > offset) result.Add(run with { Length = end - Math.Max(start, offset) });
                start = end;
            }
            return result;
        }
    }

    private static ContextExport NewExport(string name = "e") =>
        new(new MemoryExport(name, Size), depth: true, "b1", "b0")
        {
            Depth = [new(65536, 2), new(65536, 1), new(Size - 131072, 0)],
            Bitmap =
            {
                ["b1"] = [new(4096, 0), new(8192, NbdMetaExtent.Dirty), new(Size - 12288, 0)],
                ["b0"] = [new(Size, 0)],
            },
        };

    private static string ContextName(byte[] payload) => Encoding.UTF8.GetString(payload, 4, payload.Length - 4);

    private static uint ContextId(byte[] payload) => BinaryPrimitives.ReadUInt32BigEndian(payload);

    private static async Task<List<(uint Id, string Name)>> MetaAsync(RawNbdClient c, uint option, string export, params string[] queries)
    {
        var replies = await c.OptionAsync(option, RawNbdClient.MetaRequest(export, queries));
        Assert.Equal(RawNbdClient.RepAck, replies[^1].Type);
        Assert.All(replies[..^1], r => Assert.Equal(RawNbdClient.RepMetaContext, r.Type));
        return replies[..^1].Select(r => (ContextId(r.Data), ContextName(r.Data))).ToList();
    }

    private static List<(uint Length, uint Flags)> Descriptors(byte[] payload) =>
        Enumerable.Range(0, (payload.Length - 4) / 8)
            .Select(i => (BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(4 + 8 * i)), BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(8 + 8 * i))))
            .ToList();

    /// <summary>Reads the BLOCK_STATUS chunks of one reply: (context id, descriptors, DONE) until the DONE flag.</summary>
    private static async Task<List<(uint Id, List<(uint Length, uint Flags)> Extents)>> ReadStatusAsync(RawNbdClient c, ulong handle)
    {
        var chunks = new List<(uint, List<(uint, uint)>)>();
        while (true)
        {
            var chunk = await c.ReadChunkAsync();
            Assert.Equal(handle, chunk.Handle);
            Assert.Equal(5, chunk.Type); // NBD_REPLY_TYPE_BLOCK_STATUS
            chunks.Add((ContextId(chunk.Payload), Descriptors(chunk.Payload)));
            if ((chunk.Flags & 1) != 0) return chunks;
        }
    }

    [Fact]
    public async Task List_with_no_query_names_every_context_the_export_offers_in_qemu_nbd_order_without_ids()
    {
        await using var server = await TestServers.StartTcpAsync(NewExport());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);

        var all = await MetaAsync(c, RawNbdClient.OptListMeta, "e");
        Assert.Equal([(0u, "base:allocation"), (0u, "qemu:allocation-depth"), (0u, "qemu:dirty-bitmap:b1"), (0u, "qemu:dirty-bitmap:b0")], all);
    }

    [Fact]
    public async Task List_treats_empty_leaves_as_wildcards_of_their_namespace_and_skips_unknown_names()
    {
        await using var server = await TestServers.StartTcpAsync(NewExport());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);

        Assert.Equal(["qemu:allocation-depth", "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b0"],
            (await MetaAsync(c, RawNbdClient.OptListMeta, "e", "qemu:")).Select(x => x.Name));
        Assert.Equal(["qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:b0"],
            (await MetaAsync(c, RawNbdClient.OptListMeta, "e", "qemu:dirty-bitmap:")).Select(x => x.Name));
        Assert.Equal(["base:allocation"], (await MetaAsync(c, RawNbdClient.OptListMeta, "e", "base:")).Select(x => x.Name));
        // One reply per context however often it is asked for, in the fixed order, not the query's.
        Assert.Equal(["base:allocation", "qemu:dirty-bitmap:b0"],
            (await MetaAsync(c, RawNbdClient.OptListMeta, "e", "qemu:dirty-bitmap:b0", "nope:x", "base:allocation", "qemu:dirty-bitmap:b0",
                "qemu:dirty-bitmap:missing", "qemu:other", "qemu:allocation")).Select(x => x.Name));
        Assert.Empty(await MetaAsync(c, RawNbdClient.OptListMeta, "e", "qemu:dirty-bitmap:missing", "base:x", "unknown:"));
    }

    [Fact]
    public async Task An_export_without_extra_contexts_offers_only_base_allocation()
    {
        await using var server = await TestServers.StartTcpAsync(new ContextExport(new MemoryExport("plain", Size), depth: false));
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);

        Assert.Equal(["base:allocation"], (await MetaAsync(c, RawNbdClient.OptListMeta, "plain")).Select(x => x.Name));
        Assert.Empty(await MetaAsync(c, RawNbdClient.OptListMeta, "plain", "qemu:"));
        Assert.Empty(await MetaAsync(c, RawNbdClient.OptSetMeta, "plain", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"));
    }

    [Fact]
    public async Task Set_selects_only_exact_names_with_ids_and_namespace_wildcards_select_nothing()
    {
        await using var server = await TestServers.StartTcpAsync(NewExport());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);

        Assert.Empty(await MetaAsync(c, RawNbdClient.OptSetMeta, "e", "qemu:", "qemu:dirty-bitmap:", "base:"));
        var selected = await MetaAsync(c, RawNbdClient.OptSetMeta, "e", "qemu:dirty-bitmap:b0", "qemu:allocation-depth", "base:allocation", "qemu:dirty-bitmap:zz");
        Assert.Equal(["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"], selected.Select(x => x.Name));
        Assert.All(selected, x => Assert.NotEqual(0u, x.Id));
        Assert.Equal(selected.Count, selected.Select(x => x.Id).Distinct().Count());
    }

    [Fact]
    public async Task Block_status_answers_every_selected_context_in_one_reply_with_done_on_the_last_chunk()
    {
        await using var server = await TestServers.StartTcpAsync(NewExport());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);
        var ids = (await MetaAsync(c, RawNbdClient.OptSetMeta, "e", "base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b1"))
            .ToDictionary(x => x.Name, x => x.Id);
        Assert.Equal(RawNbdClient.RepAck, (await c.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("e")))[^1].Type);

        // Unaligned start, and a length ending inside the third bitmap run: every context is trimmed to it.
        await c.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, 7, 1024, 200_000);
        var chunks = await ReadStatusAsync(c, 7);
        Assert.Equal([ids["base:allocation"], ids["qemu:allocation-depth"], ids["qemu:dirty-bitmap:b1"]], chunks.Select(x => x.Id));
        Assert.Equal([(200_000u, 3u)], chunks[0].Extents); // all hole+zero in an empty memory export
        Assert.Equal([(65536u - 1024u, 2u), (65536u, 1u), (200_000u - 130048u, 0u)], chunks[1].Extents);
        Assert.Equal([(3072u, 0u), (8192u, 1u), (200_000u - 11264u, 0u)], chunks[2].Extents);
        foreach (var chunk in chunks) Assert.Equal(200_000L, chunk.Extents.Sum(e => (long)e.Length));
    }

    [Fact]
    public async Task Block_status_with_req_one_sends_exactly_one_descriptor_per_context()
    {
        await using var server = await TestServers.StartTcpAsync(NewExport());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);
        await MetaAsync(c, RawNbdClient.OptSetMeta, "e", "qemu:allocation-depth", "qemu:dirty-bitmap:b1");
        await c.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("e"));

        await c.SendRequestAsync(RawNbdClient.FlagReqOne, RawNbdClient.CmdBlockStatus, 9, 5000, 500_000);
        var chunks = await ReadStatusAsync(c, 9);
        Assert.Equal(2, chunks.Count);
        Assert.Equal([(65536u - 5000u, 2u)], chunks[0].Extents);
        Assert.Equal([(12288u - 5000u, 1u)], chunks[1].Extents);

        // A request shorter than the first run: the one descriptor is the request's length.
        await c.SendRequestAsync(RawNbdClient.FlagReqOne, RawNbdClient.CmdBlockStatus, 10, 0, 100);
        chunks = await ReadStatusAsync(c, 10);
        Assert.Equal([(100u, 2u)], chunks[0].Extents);
        Assert.Equal([(100u, 0u)], chunks[1].Extents);
    }

    [Fact]
    public async Task Only_unknown_contexts_selected_leaves_block_status_refused()
    {
        await using var server = await TestServers.StartTcpAsync(NewExport());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);
        Assert.Empty(await MetaAsync(c, RawNbdClient.OptSetMeta, "e", "qemu:dirty-bitmap:missing"));
        await c.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("e"));

        await c.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, 11, 0, 4096);
        var chunk = await c.ReadChunkAsync();
        Assert.Equal(0x8001, chunk.Type);
        Assert.Equal(EINVAL, BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload));
    }

    [Fact]
    public async Task Contexts_selected_for_another_export_do_not_carry_over()
    {
        await using var server = await TestServers.StartTcpAsync(NewExport("e"), NewExport("f"));
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);
        Assert.Single(await MetaAsync(c, RawNbdClient.OptSetMeta, "f", "qemu:allocation-depth"));
        await c.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("e"));

        await c.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, 12, 0, 4096);
        Assert.Equal(0x8001, (await c.ReadChunkAsync()).Type);
    }

    [Fact]
    public async Task A_context_that_fails_turns_the_whole_reply_into_one_error()
    {
        var export = NewExport();
        export.Bitmap.Remove("b0"); // reading b0 now throws an IOException
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);
        await MetaAsync(c, RawNbdClient.OptSetMeta, "e", "base:allocation", "qemu:dirty-bitmap:b0");
        await c.OptionAsync(RawNbdClient.OptGo, RawNbdClient.InfoRequest("e"));

        await c.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, 13, 0, 4096);
        var chunk = await c.ReadChunkAsync();
        Assert.Equal((1, 0x8001), ((int)chunk.Flags, (int)chunk.Type)); // DONE, ERROR
        Assert.Equal(EIO, BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload));
        // The connection carries on.
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 14, 0, 512);
        var read = await c.ReadChunkAsync();
        Assert.Equal((14UL, 2), (read.Handle, (int)read.Type)); // OFFSET_HOLE: the memory export is empty
    }
}
