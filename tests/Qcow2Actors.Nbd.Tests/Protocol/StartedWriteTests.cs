using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// On the socket engine's thread (inline socket completions, as these tests run, and a server without receive threads), the server offers
/// a well-formed WRITE without FUA to <see cref="INbdExport.TryStartWrite"/> and, when the export starts it, answers
/// from where it completes; anything the export declines or the server refuses goes the ordinary way.
/// </summary>
public sealed class StartedWriteTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);
    private const ushort FlagFua = 1;

    /// <summary>
    /// Starts the writes at or past <see cref="StartFrom"/> itself, each completing when the test releases it;
    /// declines the rest. Notes where it was asked and what reached <see cref="INbdExport.WriteAsync"/>.
    /// </summary>
    private sealed class StartingExport(INbdExport inner) : DelegatingExport(inner), INbdExport
    {
        public const long StartFrom = 65536;
        private readonly Lock _lock = new();
        public readonly List<(long Offset, bool OnPool)> Asked = [];
        public readonly List<long> Ordinary = [];
        public readonly List<(long Offset, TaskCompletionSource Done)> Started = [];
        public TaskCompletionSource FirstStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool TryStartWrite(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken, out ValueTask write)
        {
            lock (_lock) Asked.Add((offset, Thread.CurrentThread.IsThreadPoolThread));
            write = default;
            if (offset < StartFrom) return false;
            var done = new TaskCompletionSource();
            lock (_lock) Started.Add((offset, done));
            write = WriteWhenReleasedAsync(offset, data, done.Task, cancellationToken);
            FirstStarted.TrySetResult();
            return true;
        }

        private async ValueTask WriteWhenReleasedAsync(long offset, ReadOnlyMemory<byte> data, Task released, CancellationToken cancellationToken)
        {
            await released;
            await base.WriteAsync(offset, data, false, cancellationToken);
        }

        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
        {
            lock (_lock) Ordinary.Add(offset);
            return base.WriteAsync(offset, data, fua, cancellationToken);
        }
    }

    [Fact]
    public async Task A_write_the_export_starts_is_offered_on_the_socket_thread_and_answered_only_when_it_completes()
    {
        await using var c = await Connected.StartAsync();
        var (inner, export, client) = (c.Inner, c.Export, c.Client);

        var data = TestServers.RandomBytes(4096, 7);
        await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, (ulong)StartingExport.StartFrom, 4096, data);
        await export.FirstStarted.Task.WaitAsync(Bound);
        // A read sent after it is answered first: the started write holds its reply until it completes.
        await client.SendRequestAsync(0, RawNbdClient.CmdRead, 2, 0, 4096);
        var read = await client.ReadSimpleReplyAsync(4096).WaitAsync(Bound);
        Assert.Equal((0u, 2ul), (read.Error, read.Handle));

        export.Started[0].Done.SetResult();
        var written = await client.ReadSimpleReplyAsync().WaitAsync(Bound);
        Assert.Equal((0u, 1ul), (written.Error, written.Handle));
        await AssertStoredAsync(inner, StartingExport.StartFrom, data);
        Assert.Empty(export.Ordinary);
        // Asked on the socket engine's thread: else this test shows nothing about the hand-off it saves.
        Assert.Equal([(StartingExport.StartFrom, false)], export.Asked);
    }

    [Fact]
    public async Task A_write_the_export_declines_goes_to_WriteAsync_and_lands()
    {
        await using var c = await Connected.StartAsync();
        var (inner, export, client) = (c.Inner, c.Export, c.Client);

        var data = TestServers.RandomBytes(4096, 8);
        await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 4096, 4096, data);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync().WaitAsync(Bound)).Error);

        await AssertStoredAsync(inner, 4096, data);
        Assert.Equal([4096L], export.Ordinary);
        Assert.Equal([(4096L, false)], export.Asked);
        Assert.Empty(export.Started);
    }

    [Fact]
    public async Task FUA_writes_and_writes_the_server_refuses_are_never_offered()
    {
        await using var c = await Connected.StartAsync();
        var (inner, export, client) = (c.Inner, c.Export, c.Client);

        // FUA: durable before the reply, which only the ordinary write promises.
        var data = TestServers.RandomBytes(4096, 9);
        await client.SendRequestAsync(FlagFua, RawNbdClient.CmdWrite, 1, (ulong)StartingExport.StartFrom, 4096, data);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync().WaitAsync(Bound)).Error);
        // Past the end: refused by the server (ENOSPC), the export never sees it.
        await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 2, (1 << 20) - 2048, 4096, data);
        var past = await client.ReadSimpleReplyAsync().WaitAsync(Bound);
        Assert.Equal((28u, 2ul), (past.Error, past.Handle));

        Assert.Empty(export.Asked);
        Assert.Equal([StartingExport.StartFrom], export.Ordinary);
        await AssertStoredAsync(inner, StartingExport.StartFrom, data);
    }

    private static async Task AssertStoredAsync(MemoryExport inner, long offset, byte[] data)
    {
        var back = new byte[data.Length];
        await inner.ReadAsync(offset, back, default);
        Assert.Equal(data, back);
    }

    /// <summary>A server on <see cref="StartingExport"/> over a 1 MiB memory export, and a client in transmission on it.</summary>
    private sealed class Connected(MemoryExport inner, StartingExport export, NbdServer server, RawNbdClient client) : IAsyncDisposable
    {
        public MemoryExport Inner => inner;
        public StartingExport Export => export;
        public RawNbdClient Client => client;

        public static async Task<Connected> StartAsync()
        {
            var inner = new MemoryExport("e", 1 << 20);
            var export = new StartingExport(inner);
            // Receive threads off: TryStartWrite is asked only where the reader must not block (the socket engine's thread).
            var server = await TestServers.StartTcpAsync(receiveThreads: false, export);
            var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            await client.GoAsync("e");
            return new Connected(inner, export, server, client);
        }

        public async ValueTask DisposeAsync()
        {
            await client.DisposeAsync();
            await server.DisposeAsync();
        }
    }
}
