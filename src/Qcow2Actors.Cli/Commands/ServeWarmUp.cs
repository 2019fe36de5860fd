using System.Net;
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
/// temporary directory, over a real NBD connection on the same kind of socket, on the server's own
/// <see cref="ImageHost"/>.
/// </summary>
/// <remarks>
/// Why: after <see cref="OptimizedRestart"/> every method is JIT-compiled on its first call (tiered compilation
/// is off), so the first job on a fresh server used to pay for compiling the whole request path while it ran: a
/// fresh server's first 1 GiB sequential write was ~10 % slower than a warm one's
/// (bench/results/serve-jit-2026-12-01.md). Here that cost moves into start-up, before the listener exists.
/// It is an optimization only: a warm-up that fails is one line on stderr and the server starts as it would have.
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

    /// <summary>Prefix of the temporary directory, with this process's id: one a killed serve left behind says whose it was.</summary>
    public static string DirectoryPrefix => $"q2a-warm-up-{Environment.ProcessId}-";

    /// <summary>True when this process compiles every method on first call: <see cref="OptimizedRestart.Variable"/> is 0.</summary>
    public static bool Wanted(Func<string, string?> environment) => environment(OptimizedRestart.Variable) == "0";

    /// <summary>
    /// Runs the warm-up on <paramref name="host"/> with the page-cache mode <paramref name="cache"/> and a socket like
    /// <paramref name="endPoint"/> (a Unix socket in the temporary directory, or TCP on the loopback address), then
    /// removes everything it made. Returns true when every request was answered and read back what was written;
    /// never throws: a failure is one line on <paramref name="stderr"/>, a cancel (serve is stopping) none.
    /// </summary>
    public static async Task<bool> RunAsync(ImageHost host, CacheMode cache, EndPoint endPoint, TextWriter stderr, CancellationToken cancel)
    {
        DirectoryInfo? dir = null;
        try
        {
            dir = Directory.CreateTempSubdirectory(DirectoryPrefix);
            await RunInAsync(host, cache, endPoint, dir.FullName, cancel).ConfigureAwait(false);
            // What the throwaway image, its connection and its buffers used goes back to the system now, not at some
            // later collection: a server is judged by its peak memory, and this was no client's.
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            return true;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            return false; // serve is stopping
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

    private static async Task RunInAsync(ImageHost host, CacheMode cache, EndPoint endPoint, string dir, CancellationToken cancel)
    {
        var path = Path.Combine(dir, "warm-up.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = ImageSize, ClusterSize = ClusterSize });
        var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, Cache = cache }, cancel).ConfigureAwait(false);
        await using var export = new Qcow2Export(image, ExportName, ownsImage: true);
        var listen = endPoint is UnixDomainSocketEndPoint
            ? new UnixDomainSocketEndPoint(Path.Combine(dir, "nbd.sock"))
            : (EndPoint)new IPEndPoint(IPAddress.Loopback, 0);
        var server = new NbdServer(new NbdServerOptions { Exports = [export], EndPoint = listen });
        await using (server.ConfigureAwait(false))
        {
            await server.StartAsync(cancel).ConfigureAwait(false);
            var client = await NbdClient.ConnectAsync(ClientOptions(server.LocalEndPoint!), cancel).ConfigureAwait(false);
            await using (client.ConfigureAwait(false)) await RequestsAsync(client, cancel).ConfigureAwait(false);
            await server.StopAsync(cancel).ConfigureAwait(false);
        }
    }

    private static NbdClientOptions ClientOptions(EndPoint bound) => bound switch
    {
        UnixDomainSocketEndPoint unix => new NbdClientOptions { UnixSocket = unix.ToString(), ExportName = ExportName },
        IPEndPoint ip => new NbdClientOptions { Host = ip.Address.ToString(), Port = ip.Port, ExportName = ExportName },
        _ => throw new InvalidOperationException($"unexpected warm-up endpoint {bound}"),
    };

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
        await AllAsync(LargeRequests, i => client.WriteAsync((long)i * LargeLength, large, ct: cancel)).ConfigureAwait(false);
        await AllAsync(LargeRequests, i => client.ReadAsync((long)i * LargeLength, largeBack[i] = new byte[LargeLength], cancel)).ConfigureAwait(false);
        // Small writes into clusters not yet allocated (the rest of each cluster must read as zeroes), then in place.
        await AllAsync(SmallRequests, i => client.WriteAsync(smallBase + (long)i * ClusterSize, small, ct: cancel)).ConfigureAwait(false);
        await AllAsync(SmallRequests, i => client.WriteAsync(smallBase + (long)i * ClusterSize + SmallLength, small, ct: cancel)).ConfigureAwait(false);
        await AllAsync(SmallRequests, i => client.ReadAsync(smallBase + (long)i * ClusterSize, smallBack[i] = new byte[3 * SmallLength], cancel)).ConfigureAwait(false);
        await client.FlushAsync(cancel).ConfigureAwait(false);
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

    private static async Task AllAsync(int count, Func<int, ValueTask> request)
    {
        var pending = new Task[count];
        for (int i = 0; i < count; i++) pending[i] = request(i).AsTask();
        await Task.WhenAll(pending).ConfigureAwait(false);
    }
}
