using Akka.Configuration;

namespace Qcow2Actors.Engine;

/// <summary>
/// Keeps the .NET thread pool able to start threads at once while device calls hold its threads in the kernel.
/// Actors, NBD connections and guest data I/O share that pool, and a data read or write to a hung disk blocks its
/// pool thread; past the pool's minimum the runtime adds threads slowly (on purpose), so a few dozen calls hung
/// under one image would delay every other image by up to a second.
/// </summary>
/// <remarks>
/// The minimum is raised on demand, not up front: it starts at <see cref="Base"/> and, whenever the device calls
/// blocking pool threads at once come within <see cref="Slack"/> of it, grows (at least doubling, and to at least
/// those calls plus <see cref="Base"/>) up to <c>qcow2actors.thread-pool-floor</c>. A minimum of 256 from the start
/// let the pool grow to ~200 threads under ordinary random writes (each queued item below the minimum starts a thread
/// at once): ~5 MiB of RSS and more context switches for nothing. The minimum is never lowered.
/// </remarks>
internal static class ThreadPoolFloor
{
    /// <summary>Most the minimum is raised to when the HOCON key is missing.</summary>
    public const int Default = 256;

    /// <summary>
    /// The minimum an image host starts with (or the configured ceiling, if lower). 16, not 32: a busy serve then
    /// runs ~50 threads instead of ~73 and peaks ~1 MiB lower (allocwrite, 3 alternating runs: 81/81/83 MiB against
    /// 82/82/83, IOPS within noise; bench/results/serve-jit-2026-12-01.md); growth on demand is unchanged.
    /// </summary>
    public const int Base = 16;

    /// <summary>Blocked calls this close to the minimum raise it.</summary>
    public const int Slack = 8;

    private static readonly Lock Gate = new();
    private static int s_ceiling; // 0 until an image host applies its config: nothing is raised
    private static int s_floor;
    private static int s_blocked;

    [ThreadStatic]
    private static int t_depth;

    /// <summary>The minimum this class has set (or found set higher); for tests.</summary>
    internal static int Current => Volatile.Read(ref s_floor);

    /// <summary>Device calls now running on their threads (outermost calls only); for tests.</summary>
    internal static int Blocked => Volatile.Read(ref s_blocked);

    /// <summary>Takes the ceiling from <paramref name="config"/> (never lowering it; 0: leave the pool alone) and applies the base.</summary>
    public static void Apply(Config config)
    {
        int ceiling = config.GetInt("qcow2actors.thread-pool-floor", Default);
        if (ceiling <= 0) return;
        lock (Gate)
        {
            Volatile.Write(ref s_ceiling, Math.Max(s_ceiling, ceiling));
            Raise(Math.Min(ceiling, Base));
        }
    }

    /// <summary>
    /// Before a device call that may hold this thread in the kernel (a read or write running synchronously);
    /// pair it with <see cref="Exit"/>. Nested calls (a decorator's inner device) count once.
    /// </summary>
    public static void Enter()
    {
        if (t_depth++ > 0) return;
        int blocked = Interlocked.Increment(ref s_blocked);
        if (blocked >= Volatile.Read(ref s_floor) - Slack && Volatile.Read(ref s_ceiling) > 0) Grow(blocked);
    }

    /// <summary>After the call <see cref="Enter"/> announced has returned.</summary>
    public static void Exit()
    {
        if (--t_depth == 0) Interlocked.Decrement(ref s_blocked);
    }

    /// <summary><see cref="Enter"/> now and <see cref="Exit"/> when the returned scope is disposed (<c>using</c>).</summary>
    public static Held Hold()
    {
        Enter();
        return default;
    }

    /// <summary>A device call's hold on its thread, from <see cref="Hold"/>.</summary>
    public readonly ref struct Held
    {
        /// <summary>The call has returned.</summary>
        public void Dispose() => Exit();
    }

    private static void Grow(int blocked)
    {
        lock (Gate)
        {
            if (blocked < s_floor - Slack || s_floor >= s_ceiling) return;
            Raise(Math.Min(s_ceiling, Math.Max(2 * s_floor, blocked + Base)));
        }
    }

    // Under Gate. Never lowers the pool's minimum (an embedding application may have set it higher).
    private static void Raise(int floor)
    {
        ThreadPool.GetMinThreads(out int workers, out int completion);
        if (workers < floor) ThreadPool.SetMinThreads(floor, completion);
        Volatile.Write(ref s_floor, Math.Max(s_floor, Math.Max(workers, floor)));
    }
}
