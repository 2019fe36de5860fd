using System.Buffers.Binary;
using System.Text;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>Wire-level behaviour with a hand-written client: negotiation, replies, errors, hostile traffic.</summary>
public sealed class ProtocolTests
{
    private const int MiB = 1024 * 1024;
    private const uint EPERM = 1, EIO = 5, EINVAL = 22, ENOSPC = 28, ENOTSUP = 95;

    [Fact]
    public async Task Handshake_advertises_fixed_newstyle_and_answers_options()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("a", MiB, description: "desc"), new MemoryExport("b", 2 * MiB));
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        Assert.Equal(3, c.HandshakeFlags);

        var list = await c.OptionAsync(RawNbdClient.OptList, []);
        Assert.Equal([RawNbdClient.RepServer, RawNbdClient.RepServer, RawNbdClient.RepAck], list.Select(r => r.Type));
        Assert.Equal("adesc", Encoding.UTF8.GetString(list[0].Data, 4, list[0].Data.Length - 4));

        Assert.Equal(RawNbdClient.RepErrUnsup, (await c.OptionAsync(99, [1, 2, 3])).Single().Type);
        Assert.Equal(RawNbdClient.RepErrUnsup, (await c.OptionAsync(5, [])).Single().Type); // STARTTLS
        Assert.Equal(RawNbdClient.RepErrInvalid, (await c.OptionAsync(RawNbdClient.OptList, [0])).Single().Type);
        Assert.Equal(RawNbdClient.RepErrUnknown, (await c.OptionAsync(RawNbdClient.OptInfo, RawNbdClient.InfoRequest("nope"))).Single().Type);
        Assert.Equal(RawNbdClient.RepErrInvalid, (await c.OptionAsync(RawNbdClient.OptSetMeta, RawNbdClient.MetaRequest("a", "base:allocation"))).Single().Type);

        // INFO with NAME, DESCRIPTION and BLOCK_SIZE for the default export.
        var info = await c.OptionAsync(RawNbdClient.OptInfo, RawNbdClient.InfoRequest("", 1, 2, 3));
        Assert.Equal(RawNbdClient.RepAck, info[^1].Type);
        var byType = info.Where(r => r.Type == RawNbdClient.RepInfo).ToDictionary(r => BinaryPrimitives.ReadUInt16BigEndian(r.Data), r => r.Data);
        Assert.Equal((ulong)MiB, BinaryPrimitives.ReadUInt64BigEndian(byType[0].AsSpan(2)));
        Assert.Equal("a", Encoding.UTF8.GetString(byType[1], 2, byType[1].Length - 2));
        Assert.Equal("desc", Encoding.UTF8.GetString(byType[2], 2, byType[2].Length - 2));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(byType[3].AsSpan(2)));
        Assert.Equal(4096u, BinaryPrimitives.ReadUInt32BigEndian(byType[3].AsSpan(6)));
        Assert.Equal(32u * MiB, BinaryPrimitives.ReadUInt32BigEndian(byType[3].AsSpan(10)));

        // LIST_META_CONTEXT wildcard after structured replies.
        await c.OptionAsync(RawNbdClient.OptStructuredReply, []);
        var meta = await c.OptionAsync(RawNbdClient.OptListMeta, RawNbdClient.MetaRequest("b", "base:"));
        Assert.Equal("base:allocation", Encoding.UTF8.GetString(meta[0].Data, 4, meta[0].Data.Length - 4));
        Assert.Equal([RawNbdClient.RepAck], (await c.OptionAsync(RawNbdClient.OptListMeta, RawNbdClient.MetaRequest("b", "qemu:dirty-bitmap:x"))).Select(r => r.Type));

        Assert.Equal(RawNbdClient.RepAck, (await c.OptionAsync(RawNbdClient.OptAbort, [])).Single().Type);
        Assert.True(await c.WaitForCloseAsync());
    }

    [Fact]
    public async Task Export_name_enters_transmission_and_unknown_name_disconnects()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("x", 12345));
        await using (var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await c.SendOptionAsync(RawNbdClient.OptExportName, Encoding.UTF8.GetBytes("x"));
            var reply = await c.ReadAsync(10); // NO_ZEROES was negotiated
            Assert.Equal(12345UL, BinaryPrimitives.ReadUInt64BigEndian(reply));
            await c.SendRequestAsync(0, RawNbdClient.CmdRead, 7, 0, 16);
            var (error, handle, _) = await c.ReadSimpleReplyAsync(16);
            Assert.Equal((0u, 7UL), (error, handle));
        }
        await using (var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await c.SendOptionAsync(RawNbdClient.OptExportName, Encoding.UTF8.GetBytes("missing"));
            Assert.True(await c.WaitForCloseAsync());
        }
    }

    [Fact]
    public async Task Export_name_without_no_zeroes_gets_the_124_reserved_bytes()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("x", 4096));
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!, clientFlags: 1);
        await c.SendOptionAsync(RawNbdClient.OptExportName, []);
        var reply = await c.ReadAsync(134);
        Assert.Equal(4096UL, BinaryPrimitives.ReadUInt64BigEndian(reply));
        Assert.All(reply[10..], b => Assert.Equal(0, b));
        await c.SendRequestAsync(0, RawNbdClient.CmdFlush, 5, 0, 0);
        Assert.Equal((0u, 5UL), ((await c.ReadSimpleReplyAsync()).Error, 5UL));
    }

    [Fact]
    public async Task Unknown_client_flags_end_the_handshake()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("x", 4096));
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!, clientFlags: 0x80);
        Assert.True(await c.WaitForCloseAsync());
    }

    [Fact]
    public async Task In_flight_requests_per_connection_are_bounded()
    {
        var gate = new TaskCompletionSource();
        var threeRunning = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = 0;
        var peak = 0;
        var export = new ScriptedExport(new MemoryExport("b", MiB))
        {
            BeforeRead = async _ =>
            {
                var now = Interlocked.Increment(ref running);
                int seen;
                while ((seen = Volatile.Read(ref peak)) < now && Interlocked.CompareExchange(ref peak, now, seen) != seen) { }
                if (now == 3) threeRunning.TrySetResult();
                await gate.Task;
                Interlocked.Decrement(ref running);
            },
        };
        var options = NbdServerOptions.Tcp([export], port: 0) with { MaxInFlightRequests = 3 };
        await using var server = new NbdServer(options);
        var readerWaiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.ReaderWaitingForSlot = () => readerWaiting.TrySetResult();
        await server.StartAsync();
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("b");
        for (ulong i = 0; i < 10; i++) await c.SendRequestAsync(0, RawNbdClient.CmdRead, i, i * 512, 512);
        // Three reads are in the export and the reader holds the fourth, parked for a slot: were the
        // bound broken, the fourth would be running instead (and the reader would never park).
        await threeRunning.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await readerWaiting.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(3, Volatile.Read(ref peak));
        gate.SetResult();
        var handles = new HashSet<ulong>();
        for (var i = 0; i < 10; i++) handles.Add((await c.ReadSimpleReplyAsync(512)).Handle);
        Assert.Equal(10, handles.Count);
        Assert.Equal(3, Volatile.Read(ref peak));
    }

    [Fact]
    public async Task Simple_replies_carry_data_and_errors_without_ending_the_connection()
    {
        var export = new MemoryExport("d", MiB);
        await using var server = await TestServers.StartTcpAsync(export, new MemoryExport("ro", MiB, isReadOnly: true));
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var (size, flags) = await c.GoAsync("d");
        Assert.Equal((ulong)MiB, size);
        Assert.Equal(0x0100 | 0x0800 | 0x0040 | 0x0020 | 0x0008 | 0x0004 | 0x0001, flags); // no READ_ONLY, no DF without structured replies

        var data = TestServers.RandomBytes(4096, 9);
        await c.SendRequestAsync(RawNbdClient.FlagFua, RawNbdClient.CmdWrite, 1, 8192, 4096, data);
        Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 8192, 4096);
        Assert.Equal(data, (await c.ReadSimpleReplyAsync(4096)).Data);

        async Task<uint> StatusAsync(ushort flags, ushort type, ulong offset, uint length, byte[]? payload = null)
        {
            await c.SendRequestAsync(flags, type, 99, offset, length, payload);
            var reply = await c.ReadSimpleReplyAsync(type == RawNbdClient.CmdRead ? (int)length : 0);
            Assert.Equal(99UL, reply.Handle);
            return reply.Error;
        }
        Assert.Equal(EINVAL, await StatusAsync(0, RawNbdClient.CmdRead, MiB - 10, 20));
        Assert.Equal(EINVAL, await StatusAsync(0, RawNbdClient.CmdRead, ulong.MaxValue - 5, 20)); // offset+length overflows
        Assert.Equal(ENOSPC, await StatusAsync(0, RawNbdClient.CmdWrite, MiB - 2, 4, [1, 2, 3, 4]));
        Assert.Equal(ENOSPC, await StatusAsync(0, RawNbdClient.CmdWriteZeroes, MiB, 1));
        Assert.Equal(EINVAL, await StatusAsync(0, RawNbdClient.CmdTrim, MiB, 512));
        Assert.Equal(EINVAL, await StatusAsync(0, 42, 0, 0)); // unknown command
        Assert.Equal(EINVAL, await StatusAsync(0x8000, RawNbdClient.CmdFlush, 0, 0)); // unknown flag
        Assert.Equal(EINVAL, await StatusAsync(RawNbdClient.FlagDf, RawNbdClient.CmdRead, 0, 512)); // DF needs structured replies
        Assert.Equal(EINVAL, await StatusAsync(0, RawNbdClient.CmdBlockStatus, 0, 512)); // no meta context
        Assert.Equal(EINVAL, await StatusAsync(0, RawNbdClient.CmdRead, 0, 32 * MiB + 1)); // over the block size
        Assert.Equal(0u, await StatusAsync(0, RawNbdClient.CmdFlush, 0, 0));

        // Still healthy after all of that.
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 3, 8192, 4096);
        Assert.Equal(data, (await c.ReadSimpleReplyAsync(4096)).Data);
        await c.SendRequestAsync(0, RawNbdClient.CmdDisc, 4, 0, 0);
        Assert.True(await c.WaitForCloseAsync());
    }

    [Fact]
    public async Task Read_only_export_answers_writes_with_EPERM()
    {
        var export = new MemoryExport("ro", MiB, isReadOnly: true);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var (_, flags) = await c.GoAsync("ro");
        Assert.NotEqual(0, flags & 2);
        Assert.Equal(0, flags & 0x20); // no TRIM advertised

        await c.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4, [9, 9, 9, 9]);
        Assert.Equal(EPERM, (await c.ReadSimpleReplyAsync()).Error);
        await c.SendRequestAsync(0, RawNbdClient.CmdTrim, 2, 0, 4096);
        Assert.Equal(EPERM, (await c.ReadSimpleReplyAsync()).Error);
        await c.SendRequestAsync(0, RawNbdClient.CmdWriteZeroes, 3, 0, 4096);
        Assert.Equal(EPERM, (await c.ReadSimpleReplyAsync()).Error);
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 4, 0, 4);
        Assert.Equal(0u, (await c.ReadSimpleReplyAsync(4)).Error);
        Assert.Empty(export.AllocatedRanges());
    }

    [Fact]
    public async Task Structured_replies_send_data_holes_block_status_and_error_messages()
    {
        var export = new MemoryExport("s", MiB);
        export.Write(4096, TestServers.RandomBytes(8192, 5));
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        var (_, flags) = await c.GoAsync("s", structured: true, meta: true);
        Assert.NotEqual(0, flags & 0x80); // DF

        await c.SendRequestAsync(RawNbdClient.FlagDf, RawNbdClient.CmdRead, 1, 4096, 8192);
        var chunk = await c.ReadChunkAsync();
        Assert.Equal((1, 1, 1UL), ((int)chunk.Flags, (int)chunk.Type, chunk.Handle)); // DONE, OFFSET_DATA
        Assert.Equal(4096UL, BinaryPrimitives.ReadUInt64BigEndian(chunk.Payload));
        Assert.Equal(export.ToArray().AsSpan(4096, 8192).ToArray(), chunk.Payload[8..]);

        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 65536, 4096);
        chunk = await c.ReadChunkAsync();
        Assert.Equal(2, chunk.Type); // OFFSET_HOLE
        Assert.Equal(4096u, BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(8)));

        await c.SendRequestAsync(0, RawNbdClient.CmdBlockStatus, 3, 0, 65536);
        chunk = await c.ReadChunkAsync();
        Assert.Equal(5, chunk.Type);
        var descriptors = Enumerable.Range(0, (chunk.Payload.Length - 4) / 8)
            .Select(i => (BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(4 + 8 * i)), BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(8 + 8 * i))))
            .ToList();
        Assert.Equal([(4096u, 3u), (8192u, 0u), (65536u - 12288u, 3u)], descriptors);

        await c.SendRequestAsync(RawNbdClient.FlagReqOne, RawNbdClient.CmdBlockStatus, 4, 6000, 65536);
        chunk = await c.ReadChunkAsync();
        Assert.Equal(12, chunk.Payload.Length); // exactly one descriptor
        Assert.Equal(12288u - 6000u, BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(4)));

        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 5, MiB, 1);
        chunk = await c.ReadChunkAsync();
        Assert.Equal(0x8001, chunk.Type);
        Assert.Equal(EINVAL, BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload));
        Assert.Contains("end of the export", Encoding.UTF8.GetString(chunk.Payload, 6, BinaryPrimitives.ReadUInt16BigEndian(chunk.Payload.AsSpan(4))));

        // Success of a payload-free command may be a simple reply.
        await c.SendRequestAsync(0, RawNbdClient.CmdWriteZeroes, 6, 4096, 4096);
        Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
        Assert.Equal([(8192L, 4096L)], export.AllocatedRanges());
        await c.SendRequestAsync(RawNbdClient.FlagNoHole, RawNbdClient.CmdWriteZeroes, 7, 0, 4096);
        Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
        Assert.Equal([(0L, 4096L), (8192L, 4096L)], export.AllocatedRanges());
    }

    [Fact]
    public async Task Export_exceptions_map_to_errnos_and_the_connection_carries_on()
    {
        var inner = new MemoryExport("f", MiB);
        var export = new ScriptedExport(inner)
        {
            WriteFailure = offset => offset switch
            {
                0 => new NbdException(NbdError.NoSpace, "quota"),
                4096 => new InvalidOperationException("boom"),
                8192 => new IOException("disk full", 28),
                _ => null,
            },
        };
        await using var server = await TestServers.StartTcpAsync(export, new RawFastZeroProbe());
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("f");
        foreach (var (offset, expected) in new[] { (0UL, ENOSPC), (4096UL, EIO), (8192UL, ENOSPC), (12288UL, 0u) })
        {
            await c.SendRequestAsync(0, RawNbdClient.CmdWrite, offset, offset, 4, [1, 2, 3, 4]);
            var reply = await c.ReadSimpleReplyAsync();
            Assert.Equal((expected, offset), (reply.Error, reply.Handle));
        }

        await using var z = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await z.GoAsync("probe");
        await z.SendRequestAsync(RawNbdClient.FlagFastZero, RawNbdClient.CmdWriteZeroes, 1, 0, 4096);
        Assert.Equal(ENOTSUP, (await z.ReadSimpleReplyAsync()).Error);
    }

    [Fact]
    public async Task Requests_are_pipelined_and_replies_come_back_as_they_complete()
    {
        var slow = new TaskCompletionSource();
        var export = new ScriptedExport(new MemoryExport("p", MiB))
        {
            BeforeRead = offset => offset == 0 ? slow.Task : Task.CompletedTask,
        };
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("p");

        // One batch: a read that blocks, then writes and reads that do not.
        var batch = new List<byte>();
        batch.AddRange(RawNbdClient.Request(0, RawNbdClient.CmdRead, 100, 0, 512));
        for (ulong i = 1; i <= 20; i++)
            batch.AddRange(RawNbdClient.Request(0, RawNbdClient.CmdWrite, i, i * 4096, 512, TestServers.RandomBytes(512, (int)i)));
        await c.WriteAsync([.. batch]);

        var handles = new HashSet<ulong>();
        for (var i = 0; i < 20; i++) handles.Add((await c.ReadSimpleReplyAsync()).Handle);
        Assert.Equal(Enumerable.Range(1, 20).Select(i => (ulong)i).ToHashSet(), handles);

        slow.SetResult();
        var last = await c.ReadSimpleReplyAsync(512);
        Assert.Equal(100UL, last.Handle);
    }

    [Fact]
    public async Task Hostile_traffic_ends_only_its_own_connection()
    {
        var export = new MemoryExport("h", MiB);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var good = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await good.GoAsync("h");

        async Task AssertGoodClientWorksAsync(ulong handle)
        {
            var data = TestServers.RandomBytes(1024, (int)handle);
            await good.SendRequestAsync(0, RawNbdClient.CmdWrite, handle, 0, 1024, data);
            Assert.Equal((0u, handle), ((await good.ReadSimpleReplyAsync()).Error, handle));
            await good.SendRequestAsync(0, RawNbdClient.CmdRead, handle, 0, 1024);
            Assert.Equal(data, (await good.ReadSimpleReplyAsync(1024)).Data);
        }

        // Garbage instead of client flags / options.
        await using (var g = await RawNbdClient.ConnectAsync(server.LocalEndPoint!, handshake: false))
        {
            await g.ReadAsync(18);
            await g.WriteAsync(TestServers.RandomBytes(4096, 1));
            Assert.True(await g.WaitForCloseAsync());
        }
        await AssertGoodClientWorksAsync(1);

        // Garbage after a correct handshake: bad option magic.
        await using (var g = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await g.WriteAsync(TestServers.RandomBytes(64, 2));
            Assert.True(await g.WaitForCloseAsync());
        }

        // Bad request magic in transmission.
        await using (var g = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await g.GoAsync("h");
            await g.WriteAsync(RawNbdClient.Request(0, RawNbdClient.CmdRead, 1, 0, 512, magic: 0xdeadbeef));
            Assert.True(await g.WaitForCloseAsync());
        }
        await AssertGoodClientWorksAsync(2);

        // A truncated request header, then the client goes away.
        await using (var g = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await g.GoAsync("h");
            await g.WriteAsync(RawNbdClient.Request(0, RawNbdClient.CmdRead, 1, 0, 512)[..10]);
            g.HardClose();
        }

        // A write whose payload never fully arrives.
        await using (var g = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await g.GoAsync("h");
            await g.WriteAsync(RawNbdClient.Request(0, RawNbdClient.CmdWrite, 1, 65536, 65536, new byte[1000].Select(_ => (byte)7).ToArray())[..1028]);
            g.HardClose();
        }

        // A write larger than the server will buffer: disconnect (its payload cannot be skipped sanely).
        await using (var g = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await g.GoAsync("h");
            await g.WriteAsync(RawNbdClient.Request(0, RawNbdClient.CmdWrite, 1, 0, 64 * MiB));
            Assert.True(await g.WaitForCloseAsync());
        }

        // A client that hangs up with requests in flight and never reads its replies.
        await using (var g = await RawNbdClient.ConnectAsync(server.LocalEndPoint!))
        {
            await g.GoAsync("h");
            for (ulong i = 0; i < 50; i++) await g.SendRequestAsync(0, RawNbdClient.CmdRead, i, 0, 65536);
            g.HardClose();
        }

        await AssertGoodClientWorksAsync(3);
        Assert.Equal(0, export.ToArray()[65536]); // the incomplete write was never applied
        await good.SendRequestAsync(0, RawNbdClient.CmdDisc, 0, 0, 0);
        await TestServers.WaitForNoConnectionsAsync(server);
    }

    [Fact]
    public async Task Many_connects_and_disconnects_leave_no_connections_behind()
    {
        using var dir = new TempDir();
        var export = new MemoryExport("m", MiB);
        await using var server = await TestServers.StartUnixAsync(dir.File("m.sock"), export);
        for (var i = 0; i < 150; i++)
        {
            await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            switch (i % 3)
            {
                case 0:
                    await c.GoAsync("m");
                    await c.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, (ulong)i * 512, 4, [1, 2, 3, 4]);
                    Assert.Equal(0u, (await c.ReadSimpleReplyAsync()).Error);
                    await c.SendRequestAsync(0, RawNbdClient.CmdDisc, 2, 0, 0);
                    break;
                case 1:
                    await c.OptionAsync(RawNbdClient.OptAbort, []);
                    break;
                default:
                    c.HardClose(); // gone during the handshake
                    break;
            }
        }
        await TestServers.WaitForNoConnectionsAsync(server);
    }

    /// <summary>A server whose only timer is the stop deadline (no handshake timeout), on <paramref name="time"/>.</summary>
    private static async Task<NbdServer> StartTimedAsync(INbdExport export, ArmedTimerProvider time)
    {
        var server = new NbdServer(NbdServerOptions.Tcp([export], port: 0) with { TimeProvider = time, HandshakeTimeout = TimeSpan.Zero });
        await server.StartAsync();
        return server;
    }

    [Fact]
    public async Task Graceful_stop_finishes_in_flight_requests_then_closes()
    {
        var gate = new TaskCompletionSource();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var export = new ScriptedExport(new MemoryExport("g", MiB)) { BeforeRead = _ => { started.TrySetResult(); return gate.Task; } };
        var time = new ArmedTimerProvider();
        var server = await StartTimedAsync(export, time);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("g");
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 77, 0, 512);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(10)); // the request is in flight

        var stop = server.StopAsync(TimeSpan.FromSeconds(30));
        // The deadline is armed once the server stopped accepting and waits for its connections.
        Assert.Equal(TimeSpan.FromSeconds(30), await time.NextArmedAsync());
        Assert.False(stop.IsCompleted, "stop must wait for the in-flight read");
        gate.SetResult();
        var reply = await c.ReadSimpleReplyAsync(512);
        Assert.Equal((0u, 77UL), (reply.Error, reply.Handle));
        await stop.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(await c.WaitForCloseAsync());
        await server.DisposeAsync();
    }

    [Fact]
    public async Task Stop_cuts_stuck_connections_when_its_deadline_passes()
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource();
        var export = new ScriptedExport(new MemoryExport("g", MiB)) { BeforeRead = _ => { started.TrySetResult(); return never.Task; } };
        var time = new ArmedTimerProvider();
        await using var server = await StartTimedAsync(export, time);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("g");
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(10));

        var stop = server.StopAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(TimeSpan.FromSeconds(5), await time.NextArmedAsync());
        time.Advance(TimeSpan.FromSeconds(4));
        Assert.False(stop.IsCompleted, "stop cut the connection before its deadline");
        time.Advance(TimeSpan.FromSeconds(1));
        await stop.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(await c.WaitForCloseAsync());
    }

    [Fact]
    public async Task Stop_with_a_cancelled_token_cuts_stuck_connections()
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var never = new TaskCompletionSource();
        var export = new ScriptedExport(new MemoryExport("g", MiB)) { BeforeRead = _ => { started.TrySetResult(); return never.Task; } };
        await using var server = await TestServers.StartTcpAsync(export);
        await using var c = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await c.GoAsync("g");
        await c.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 512);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await server.StopAsync(new CancellationToken(canceled: true)).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(await c.WaitForCloseAsync());
    }

    [Fact]
    public void A_negative_stop_deadline_is_refused()
    {
        var server = new NbdServer(NbdServerOptions.Tcp([new MemoryExport("a", 1)], port: 0));
        // Refused synchronously, before anything is stopped.
        Action stop = () => { _ = server.StopAsync(TimeSpan.FromSeconds(-1)); };
        Assert.IsType<ArgumentOutOfRangeException>(Record.Exception(stop));
    }

    [Fact]
    public void Uris_name_the_endpoint_and_export()
    {
        var server = new NbdServer(NbdServerOptions.Tcp([new MemoryExport("a b", 1)], port: 0));
        Assert.Throws<InvalidOperationException>(() => server.GetUri());
        Assert.Throws<ArgumentException>(() => new NbdServer(NbdServerOptions.Tcp([new MemoryExport("a", 1), new MemoryExport("a", 1)])));
        Assert.Throws<ArgumentException>(() => new NbdServer(NbdServerOptions.Tcp([])));
    }

    [Fact]
    public async Task Uri_reflects_the_bound_port()
    {
        await using var server = await TestServers.StartTcpAsync(new MemoryExport("a b", 1));
        var port = ((System.Net.IPEndPoint)server.LocalEndPoint!).Port;
        Assert.NotEqual(0, port);
        Assert.Equal($"nbd://127.0.0.1:{port}/a%20b", server.GetUri());
    }

    /// <summary>An export whose zeroing is never fast, to see ENOTSUP reach the client.</summary>
    private sealed class RawFastZeroProbe() : INbdExport
    {
        public string Name => "probe";
        public long Size => MiB;
        public bool IsReadOnly => false;
        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) => ValueTask.CompletedTask;
        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) => ValueTask.CompletedTask;
        public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken) =>
            fastZero ? throw new NbdException(NbdError.NotSupported, "slow") : ValueTask.CompletedTask;
        public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) => ValueTask.CompletedTask;
        public ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;
        public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken) =>
            ValueTask.FromResult<IReadOnlyList<NbdExtent>>([new NbdExtent(length, NbdExtentFlags.None)]);
    }
}
