using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// <see cref="NbdServerOptions.ReceiveThreads"/>: a plain connection receives on a thread of its own, which also runs its
/// writes (through <see cref="INbdExport.WriteInlineAsync"/>), and that thread ends with the connection; without receive
/// threads the same writes run on pool threads.
/// </summary>
public sealed class ReceiveThreadTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Each_plain_connection_runs_its_writes_on_a_receive_thread_of_its_own_that_ends_with_it()
    {
        var export = new ThreadNotingExport(new MemoryExport("e", 1 << 20));
        await using var server = await TestServers.StartTcpAsync(receiveThreads: true, export);
        var threads = new List<Thread>();
        for (int c = 0; c < 2; c++)
        {
            await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            await client.GoAsync("e");
            // From the first request on: the reader starts on the receive thread and never leaves it here.
            for (ulong i = 0; i < 5; i++) await WriteAsync(client, i);
            var seen = export.TakeThreads();
            Assert.Equal(5, seen.Count);
            var thread = Assert.Single(seen.Distinct());
            Assert.False(thread.IsThreadPoolThread);
            Assert.Equal("q2a-nbd-recv", thread.Name);
            threads.Add(thread);
        }
        Assert.NotEqual(threads[0].ManagedThreadId, threads[1].ManagedThreadId);

        // Both clients hung up: their threads end (the second may still be leaving).
        await TestServers.WaitForNoConnectionsAsync(server);
        foreach (var thread in threads) Assert.True(thread.Join(Bound), "a receive thread outlived its connection");
    }

    [Fact]
    public async Task A_receive_thread_waiting_for_an_idle_client_ends_when_the_server_stops()
    {
        var export = new ThreadNotingExport(new MemoryExport("e", 1 << 20));
        var server = await TestServers.StartTcpAsync(receiveThreads: true, export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await client.GoAsync("e");
        await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4096, new byte[4096]).WaitAsync(Bound);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync().WaitAsync(Bound)).Error);
        var thread = Assert.Single(export.TakeThreads());

        // The client stays connected and silent: the thread waits in poll() until the stop closes the socket.
        await server.DisposeAsync().AsTask().WaitAsync(Bound);
        Assert.True(thread.Join(Bound), "the receive thread of an idle connection outlived the server");
    }

    [Fact]
    public async Task Without_receive_threads_writes_run_on_pool_threads()
    {
        var export = new ThreadNotingExport(new MemoryExport("e", 1 << 20));
        await using var server = await TestServers.StartTcpAsync(receiveThreads: false, export);
        await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
        await client.GoAsync("e");
        for (ulong i = 0; i < 4; i++) await WriteAsync(client, i);
        var seen = export.TakeThreads();
        Assert.Equal(4, seen.Count);
        Assert.All(seen, t => Assert.True(t.IsThreadPoolThread, $"a write ran on {t.Name}"));
    }

    [Fact]
    public async Task A_hard_stop_ends_while_a_receive_thread_is_stuck_in_a_write()
    {
        using var release = new ManualResetEventSlim();
        var export = new StuckWriteExport(new MemoryExport("e", 1 << 20), release);
        var server = await TestServers.StartTcpAsync(receiveThreads: true, export);
        try
        {
            await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            await client.GoAsync("e");
            await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4096, new byte[4096]).WaitAsync(Bound);
            await export.Entered.Task.WaitAsync(Bound);

            // No grace: the connection is cut off at once, and its reader (inside the write, on its receive thread)
            // cannot end until the write returns; the stop does not wait for it beyond NbdServer.AbortGrace.
            await server.StopAsync(TimeSpan.Zero).WaitAsync(Bound);
        }
        finally
        {
            release.Set();
        }
        await TestServers.WaitForNoConnectionsAsync(server); // the write returned: the connection ends and leaves the count
        await server.DisposeAsync();
    }

    private static async Task WriteAsync(RawNbdClient client, ulong handle)
    {
        await client.SendRequestAsync(0, RawNbdClient.CmdWrite, handle, handle * 4096, 4096, TestServers.RandomBytes(4096, (int)handle)).WaitAsync(Bound);
        Assert.Equal(0u, (await client.ReadSimpleReplyAsync().WaitAsync(Bound)).Error);
    }

    /// <summary>Notes the thread each <see cref="INbdExport.WriteInlineAsync"/> was called on.</summary>
    private sealed class ThreadNotingExport(INbdExport inner) : DelegatingExport(inner), INbdExport
    {
        private readonly Lock _lock = new();
        private List<Thread> _threads = [];

        public List<Thread> TakeThreads()
        {
            lock (_lock) return Interlocked.Exchange(ref _threads, []);
        }

        public ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            lock (_lock) _threads.Add(Thread.CurrentThread);
            return WriteAsync(offset, data, fua: false, cancellationToken);
        }
    }
}
