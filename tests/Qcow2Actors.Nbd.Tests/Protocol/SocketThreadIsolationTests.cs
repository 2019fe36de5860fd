using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>
/// q2a runs with inline socket completions (Program.cs sets DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1), so a
/// connection's reader loop runs on the socket engine's thread, shared by every connection, unless the connection has a
/// receive thread of its own (NbdServerOptions.ReceiveThreads, the default). These tests run the same way
/// (inline-socket-completions.runsettings sets it for the test host) and show that an export stuck in the kernel on a
/// write does not hold up the other connections, either way.
/// </summary>
public class SocketThreadIsolationTests
{
    private const int MiB = 1 << 20;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    // With receive threads the stuck write holds its connection's own thread; without, it went to the pool.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_write_stuck_in_one_export_does_not_hold_up_the_other_connections(bool receiveThreads)
    {
        using var release = new ManualResetEventSlim();
        var stuck = new StuckWriteExport(new MemoryExport("stuck", MiB), release);
        var free = new LoopThreadExport(new MemoryExport("free", MiB));
        await using var server = await TestServers.StartTcpAsync(receiveThreads, stuck, free);
        try
        {
            await using var blocked = await RawNbdClient.ConnectAsync(server.LocalEndPoint!);
            await blocked.GoAsync("stuck");
            await blocked.SendRequestAsync(0, RawNbdClient.CmdWrite, 1, 0, 4096, TestServers.RandomBytes(4096, 1));
            await stuck.Entered.Task.WaitAsync(Bound); // awaited: blocking here could hold the socket engine's thread

            // More connections than the socket engine has threads, so some share the stuck connection's thread.
            for (var i = 0; i < 8; i++)
            {
                await using var client = await RawNbdClient.ConnectAsync(server.LocalEndPoint!).WaitAsync(Bound);
                await client.GoAsync("free").WaitAsync(Bound);
                var data = TestServers.RandomBytes(4096, 10 + i);
                await client.SendRequestAsync(0, RawNbdClient.CmdWrite, 2, (ulong)i * 4096, 4096, data).WaitAsync(Bound);
                Assert.Equal(0u, (await client.ReadSimpleReplyAsync().WaitAsync(Bound)).Error);
                await client.SendRequestAsync(0, RawNbdClient.CmdRead, 3, (ulong)i * 4096, 4096).WaitAsync(Bound);
                var (error, _, read) = await client.ReadSimpleReplyAsync(4096).WaitAsync(Bound);
                Assert.Equal(0u, error);
                Assert.Equal(data, read);
            }
            // The reader loops really ran off the pool (inline completions in effect): else this test shows nothing.
            Assert.True(free.SawLoopOffPool, "no reader loop ran on the socket engine's thread");
        }
        finally
        {
            release.Set();
        }
    }

    /// <summary>Notes whether the server asked TryReadNow (called on the reader loop) from a thread outside the pool.</summary>
    private sealed class LoopThreadExport(INbdExport inner) : DelegatingExport(inner), INbdExport
    {
        private volatile bool _offPool;
        public bool SawLoopOffPool => _offPool;

        public bool TryReadNow(long offset, Span<byte> buffer)
        {
            if (!Thread.CurrentThread.IsThreadPoolThread) _offPool = true;
            return false;
        }
    }
}
