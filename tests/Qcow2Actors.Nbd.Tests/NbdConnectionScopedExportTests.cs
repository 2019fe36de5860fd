using System.Net;
using Qcow2Actors.Nbd.Client;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Nbd.Tests;

/// <summary>
/// An <see cref="INbdConnectionScopedExport"/>: the server serves each connection from its own view (made when
/// transmission starts, disposed when the connection ends), while removal and connection counts still go by the
/// export itself.
/// </summary>
public sealed class NbdConnectionScopedExportTests
{
    [Fact]
    public async Task Each_connection_is_served_from_its_own_view_which_is_disposed_when_it_ends()
    {
        var export = new ScopedExport(new MemoryExport("acme/disk1", 1 << 20));
        await using var server = new NbdServer(NbdServerOptions.Tcp([export], port: 0));
        await server.StartAsync();
        var port = ((IPEndPoint)server.LocalEndPoint!).Port;
        var options = new NbdClientOptions { Host = "127.0.0.1", Port = port, ExportName = "acme/disk1" };

        var first = await NbdClient.ConnectAsync(options);
        await using var second = await NbdClient.ConnectAsync(options);
        await first.WriteAsync(0, new byte[512]);
        await first.WriteAsync(512, new byte[512]);
        await second.WriteAsync(1024, new byte[512]);
        Assert.Equal(2, export.Views.Count);
        Assert.Equal([2, 1], export.Views.Select(v => v.Writes).Order().Reverse());
        Assert.Equal(2, server.GetConnectionCount("acme/disk1"));

        await first.DisposeAsync();
        var ended = export.Views.Single(v => v.Writes == 2);
        await ended.Disposed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(export.Views.Single(v => v.Writes == 1).Disposed.Task.IsCompleted);
        var back = new byte[512];
        await second.ReadAsync(0, back); // the data is the export's, whichever view wrote it
    }

    [Fact]
    public async Task A_shared_export_that_is_disposable_outlives_the_connections_it_served()
    {
        // A throttle wrapper is IDisposable and shared by every connection: only its owner (the host) may dispose it.
        using var export = new Qcow2Actors.Nbd.Throttling.ThrottledExport(new MemoryExport("acme/disk1", 1 << 20));
        await using var server = await TestServers.StartTcpAsync(export);
        var options = new NbdClientOptions { Host = "127.0.0.1", Port = ((IPEndPoint)server.LocalEndPoint!).Port, ExportName = "acme/disk1" };

        await using (var client = await NbdClient.ConnectAsync(options)) await client.WriteAsync(0, new byte[512]);
        await TestServers.WaitForNoConnectionsAsync(server);
        export.SetGroups(); // throws ObjectDisposedException once disposed
        await using var again = await NbdClient.ConnectAsync(options);
        await again.WriteAsync(512, new byte[512]);
    }

    private sealed class ScopedExport(INbdExport inner) : INbdConnectionScopedExport
    {
        public List<View> Views { get; } = [];
        public string Name => inner.Name;
        public long Size => inner.Size;
        public bool IsReadOnly => false;

        public INbdExport ForConnection()
        {
            var view = new View(inner);
            lock (Views) Views.Add(view);
            return view;
        }

        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) => throw new InvalidOperationException("served through a view");
        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) => throw new InvalidOperationException("served through a view");
        public ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken) => throw new InvalidOperationException("served through a view");
        public ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken) => throw new InvalidOperationException("served through a view");
        public ValueTask FlushAsync(CancellationToken cancellationToken) => throw new InvalidOperationException("served through a view");
        public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken) => throw new InvalidOperationException("served through a view");
    }

    private sealed class View(INbdExport inner) : DelegatingExport(inner), IDisposable
    {
        private int _writes;
        public int Writes => Volatile.Read(ref _writes);
        public TaskCompletionSource Disposed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public override bool IsReadOnly => false;

        public override ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _writes);
            return base.WriteAsync(offset, data, fua, cancellationToken);
        }

        public void Dispose() => Disposed.TrySetResult();
    }
}
