using System.Net.Sockets;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Client;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// Before <c>serve</c> answers its first client, runs the requests a client's first jobs make (large and small
/// writes that allocate, small writes in place, reads of both sizes, a flush) through a throwaway qcow2 image in a
/// temporary directory, over a real NBD connection, on the server's own <see cref="ImageHost"/>.
/// </summary>
/// <remarks>
/// Why: after <see cref="OptimizedRestart"/> every method is JIT-compiled on its first call (tiered compilation
/// is off), so the first job on a fresh server used to pay for compiling the whole request path while it ran: a
/// fresh server's first 1 GiB sequential write was ~10 % slower than a warm one's
/// (bench/results/serve-jit-2026-12-01.md). Here that cost moves into start-up, before the listener exists.
/// It is an optimization only: a warm-up that fails or runs past <see cref="TimeLimit"/> is one line on stderr and the
/// server starts as it would have. Its socket is a Unix socket inside its own directory (mode 0700), so no other
/// user can connect to the throwaway server, hold its stop up, or write into its image.
/// Writes are 256 KiB, not 1 MiB, so the large-transfer path (the O_DIRECT side door starts there) is compiled
/// without leaving 1 MiB buffers in the pool of a server whose clients never send large requests.
/// </remarks>
internal static class ServeWarmUp
{
    /// <summary>Virtual size of the throwaway image: one L2 table's reach is more than enough.</summary>
    private const long ImageSize = 64L * 1024 * 1024;
    /// <summary>Large enough for the engine's large-transfer path (its O_DIRECT side door starts at 256 KiB).</summary>
    private const int LargeLength = 256 * 1024;
    private const int SmallLength = 4096;
    private const int LargeRequests = 2;
    private const int SmallRequests = 16;
    private const int ClusterSize = 64 * 1024;
    private const string ExportName = "warm-up";

    /// <summary>Longest the warm-up may take (a few hundred milliseconds is usual) before serve starts without it.</summary>
    public static readonly TimeSpan TimeLimit = TimeSpan.FromSeconds(30);

    /// <summary>Prefix of the temporary directory, with this process's id: one a killed serve left behind says whose it was.</summary>
    public static string DirectoryPrefix => $"q2a-warm-up-{Environment.ProcessId}-";

    /// <summary>True when this process compiles every method on first call: the precompiled-code switch (<see cref="OptimizedRestart.Setting"/>) is 0.</summary>
    public static bool Wanted(Func<string, string?> environment) => OptimizedRestart.Setting(environment) == "0";

    /// <summary>
    /// Runs the warm-up on <paramref name="host"/> with the page-cache mode <paramref name="cache"/> (writeback where the
    /// temporary directory refuses O_DIRECT), then removes everything it made. Returns true when every request was
    /// answered and read back what was written. Never throws: a failure or a run past <see cref="TimeLimit"/> is one
    /// line on <paramref name="stderr"/>; <paramref name="cancel"/> (serve is stopping) ends it with none.
    /// </summary>
    public static async Task<bool> RunAsync(ImageHost host, CacheMode cache, TextWriter stderr, CancellationToken cancel,
        TimeProvider? time = null)
    {
        using var limit = new CancellationTokenSource(TimeLimit, time ?? TimeProvider.System);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancel, limit.Token);
        DirectoryInfo? dir = null;
        try
        {
            dir = Directory.CreateTempSubdirectory(DirectoryPrefix);
            await RunInAsync(host, cache, dir.FullName, either.Token).ConfigureAwait(false);
            // The throwaway image's tables, its connection's buffers and the read-back copies are garbage now: give
            // the memory back before clients come, rather than carry it until some later collection.
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            return true;
        }
        catch (Exception) when (cancel.IsCancellationRequested)
        {
            return false; // serve is stopping: whatever the cut-off surfaced as, it is not worth a line
        }
        catch (Exception) when (limit.IsCancellationRequested)
        {
            await stderr.WriteLineAsync($"q2a serve: start-up warm-up skipped: not done within {TimeLimit.TotalSeconds:0} s").ConfigureAwait(false);
            return false;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            await stderr.WriteLineAsync($"q2a serve: start-up warm-up skipped: {ex.Message.ReplaceLineEndings(" ")}").ConfigureAwait(false);
            return false;
        }
        finally
        {
            try { dir?.Delete(recursive: true); }
            catch (IOException) { } // left in the temporary directory, as any killed program's files are
            catch (UnauthorizedAccessException) { }
        }
    }

    private static async Task RunInAsync(ImageHost host, CacheMode cache, string dir, CancellationToken cancel)
    {
        var path = Path.Combine(dir, "warm-up.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = ImageSize, ClusterSize = ClusterSize });
        // Not cancelled: an open cut short goes on in the background and would race the directory's removal.
        var image = await OpenAsync(host, path, cache).ConfigureAwait(false);
        Qcow2Export export;
        try
        {
            export = new Qcow2Export(image, ExportName, ownsImage: true);
        }
        catch
        {
            await image.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        await using (export.ConfigureAwait(false))
        {
            var socket = Path.Combine(dir, "nbd.sock");
            var server = new NbdServer(new NbdServerOptions { Exports = [export], EndPoint = new UnixDomainSocketEndPoint(socket), MaxConnections = 1 });
            await using (server.ConfigureAwait(false))
            {
                await server.StartAsync(cancel).ConfigureAwait(false);
                var client = await NbdClient.ConnectAsync(new NbdClientOptions { UnixSocket = socket, ExportName = ExportName }, cancel).ConfigureAwait(false);
                await using (client.ConfigureAwait(false)) await RequestsAsync(client, cancel).ConfigureAwait(false);
                await server.StopAsync(cancel).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Opens the throwaway image like the first export; writeback where the temporary directory refuses O_DIRECT (tmpfs).</summary>
    private static async Task<Qcow2Image> OpenAsync(ImageHost host, string path, CacheMode cache)
    {
        try
        {
            return await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, Cache = cache }).ConfigureAwait(false);
        }
        catch (IOException) when (cache != CacheMode.Writeback)
        {
            return await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, Cache = CacheMode.Writeback }).ConfigureAwait(false);
        }
    }

    /// <summary>The shapes of a client's first jobs, each with several requests in flight (replies then leave in batches).</summary>
    private static async Task RequestsAsync(NbdClient client, CancellationToken cancel)
    {
        var large = new byte[LargeLength];
        var small = new byte[SmallLength];
        Random.Shared.NextBytes(large);
        Random.Shared.NextBytes(small);
        var largeBack = new byte[LargeRequests][];
        var smallBack = new byte[SmallRequests][];
        long smallBase = (long)LargeRequests * LargeLength;
        // Whole clusters that allocate, then reads of them.
        await AllAsync(LargeRequests, i => client.WriteAsync((long)i * LargeLength, large, ct: cancel), cancel).ConfigureAwait(false);
        await AllAsync(LargeRequests, i => client.ReadAsync((long)i * LargeLength, largeBack[i] = new byte[LargeLength], cancel), cancel).ConfigureAwait(false);
        // Small writes into clusters not yet allocated (the rest of each cluster must read as zeroes), then in place.
        await AllAsync(SmallRequests, i => client.WriteAsync(smallBase + (long)i * ClusterSize, small, ct: cancel), cancel).ConfigureAwait(false);
        await AllAsync(SmallRequests, i => client.WriteAsync(smallBase + (long)i * ClusterSize + SmallLength, small, ct: cancel), cancel).ConfigureAwait(false);
        await AllAsync(SmallRequests, i => client.ReadAsync(smallBase + (long)i * ClusterSize, smallBack[i] = new byte[3 * SmallLength], cancel), cancel).ConfigureAwait(false);
        await client.FlushAsync(cancel).AsTask().WaitAsync(cancel).ConfigureAwait(false);
        // The engine is checked too, in passing: a server that cannot read back what it just wrote should not start quietly.
        for (int i = 0; i < LargeRequests; i++)
        {
            if (!largeBack[i].AsSpan().SequenceEqual(large)) throw new InvalidDataException($"the throwaway image read back other bytes at offset {(long)i * LargeLength}");
        }
        for (int i = 0; i < SmallRequests; i++)
        {
            var back = smallBack[i];
            if (!back.AsSpan(0, SmallLength).SequenceEqual(small) || !back.AsSpan(SmallLength, SmallLength).SequenceEqual(small) || back.AsSpan(2 * SmallLength).ContainsAnyExcept((byte)0))
                throw new InvalidDataException($"the throwaway image read back other bytes at offset {smallBase + (long)i * ClusterSize}");
        }
    }

    /// <summary>Starts <paramref name="count"/> requests at once and waits for all of them, or for <paramref name="cancel"/>
    /// (a request already sent is not withdrawn: closing the connection ends it).</summary>
    private static async Task AllAsync(int count, Func<int, ValueTask> request, CancellationToken cancel)
    {
        var pending = new Task[count];
        for (int i = 0; i < count; i++) pending[i] = request(i).AsTask();
        await Task.WhenAll(pending).WaitAsync(cancel).ConfigureAwait(false);
    }
}
