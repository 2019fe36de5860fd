using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// The server asks <see cref="INbdExport.TryReadNow"/> first for small reads and answers with what it
/// filled; a false (or a throw) sends the read to <see cref="INbdExport.ReadAsync"/> as before.
/// </summary>
public sealed class InlineReadTests
{
    /// <summary>Counts the reads that reach the ordinary <see cref="INbdExport.ReadAsync"/>.</summary>
    private abstract class CountingExport(INbdExport inner) : DelegatingExport(inner)
    {
        public int OrdinaryReads;
        public override ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref OrdinaryReads);
            return base.ReadAsync(offset, buffer, cancellationToken);
        }
    }

    /// <summary>Answers TryReadNow with 0x5A bytes below <see cref="NowLimit"/>; counts the ordinary reads.</summary>
    private sealed class NowExport(INbdExport inner) : CountingExport(inner), INbdExport
    {
        public const long NowLimit = 4096;
        public bool TryReadNow(long offset, Span<byte> buffer)
        {
            if (offset == 2 * NowLimit) throw new InvalidOperationException("a broken TryReadNow");
            if (offset + buffer.Length > NowLimit) return false;
            buffer.Fill(0x5A);
            return true;
        }
    }

    [Fact]
    public async Task A_read_the_export_answers_now_skips_ReadAsync_and_one_it_declines_or_throws_on_uses_it()
    {
        var inner = new MemoryExport("e", 1 << 20);
        await inner.WriteAsync(4096, Enumerable.Repeat((byte)3, 8192).ToArray(), false, default);
        var export = new NowExport(inner);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await client.GoAsync("e");

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 4096);
        var now = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal(0u, now.Error);
        Assert.All(now.Data, b => Assert.Equal(0x5A, b));
        Assert.Equal(0, export.OrdinaryReads);

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 4096, 4096);
        var declined = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal(0u, declined.Error);
        Assert.All(declined.Data, b => Assert.Equal(3, b));

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 3, 8192, 4096);
        var thrown = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal(0u, thrown.Error);
        Assert.All(thrown.Data, b => Assert.Equal(3, b));
        Assert.Equal(2, export.OrdinaryReads);
    }

    /// <summary>
    /// Declines TryReadNow; starts every read itself and completes it from another thread: with 0x6B bytes,
    /// or (at <see cref="FailAt"/>) with a failure, after which the server must read the ordinary way.
    /// </summary>
    private sealed class StartExport(INbdExport inner) : CountingExport(inner), INbdExport
    {
        public const long FailAt = 8192;
        public int Started;
        public bool TryReadNow(long offset, Span<byte> buffer) => false;
        public bool TryStartRead(long offset, byte[] buffer, int index, int count, Engine.IReadCompletion completion)
        {
            Interlocked.Increment(ref Started);
            var thread = new Thread(() =>
            {
                if (offset == FailAt)
                {
                    completion.OnReadCompleted(new IOException("a failed started read"));
                    return;
                }
                buffer.AsSpan(index, count).Fill(0x6B);
                completion.OnReadCompleted(null);
            });
            thread.Start();
            return true;
        }
    }

    [Fact]
    public async Task A_read_the_export_starts_is_answered_from_its_completion_and_a_failed_one_reads_the_ordinary_way()
    {
        var inner = new MemoryExport("e", 1 << 20);
        await inner.WriteAsync(StartExport.FailAt, Enumerable.Repeat((byte)4, 4096).ToArray(), false, default);
        var export = new StartExport(inner);
        await using var server = await TestServers.StartTcpAsync(export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await client.GoAsync("e");

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 1, 0, 4096);
        var started = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal(0u, started.Error);
        Assert.Equal(1ul, started.Handle);
        Assert.All(started.Data, b => Assert.Equal(0x6B, b));
        Assert.Equal(0, export.OrdinaryReads);

        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 2, (ulong)StartExport.FailAt, 4096);
        var failed = await client.ReadSimpleReplyAsync(4096);
        Assert.Equal(0u, failed.Error);
        Assert.All(failed.Data, b => Assert.Equal(4, b));
        Assert.Equal(2, export.Started);
        Assert.Equal(1, export.OrdinaryReads);
    }
}
