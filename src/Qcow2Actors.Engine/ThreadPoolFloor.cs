using Akka.Configuration;

namespace Qcow2Actors.Engine;

/// <summary>
/// Raises the .NET thread pool's minimum worker threads to <c>qcow2actors.thread-pool-floor</c> when
/// an image host starts. Actors, NBD connections and guest data I/O share that pool, and a data
/// write to a hung disk blocks its pool thread; past the minimum the runtime adds threads slowly (on
/// purpose), so without a floor a few dozen calls hung under one image delay every other image by
/// up to a second. With it, the pool starts threads at once until that many are busy.
/// </summary>
internal static class ThreadPoolFloor
{
    /// <summary>Floor used when the HOCON key is missing.</summary>
    public const int Default = 256;

    private static readonly object Gate = new();

    /// <summary>Applies the floor of <paramref name="config"/>; never lowers the current minimum (0: leaves it).</summary>
    public static void Apply(Config config)
    {
        int floor = config.GetInt("qcow2actors.thread-pool-floor", Default);
        if (floor <= 0) return;
        lock (Gate)
        {
            ThreadPool.GetMinThreads(out int workers, out int completion);
            if (workers < floor) ThreadPool.SetMinThreads(floor, completion);
        }
    }
}
