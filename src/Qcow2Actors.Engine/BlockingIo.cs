using Akka.Actor;

namespace Qcow2Actors.Engine;

/// <summary>
/// Runs blocking file I/O (fdatasync, tables written back in place, journal replay and the
/// refcount rebuild of recovery, journal file writes) on threads of its own instead of the
/// dispatcher the actors run on. The calling actor awaits the returned task: its mailbox waits as
/// it did while it blocked, but its thread goes back to the other actors, so an image whose disk
/// stalls on fsync holds up only its own requests.
/// </summary>
/// <remarks>
/// Why own threads, and not <c>Task.Run</c> or an Akka dispatcher: Akka's default dispatcher runs
/// on the .NET thread pool, so blocking pool threads starves the actors of every image until the
/// pool grows (slowly, on purpose). Akka's dedicated-thread dispatchers (ForkJoinDispatcher) wake
/// at most one thread per core for queued work, so a second blocking call can wait behind a stalled
/// one even while threads sit idle. Here every call gets a thread at once, up to a bound
/// (HOCON <c>qcow2actors.io-threads</c>, and <c>io-threads</c> of the file journal), threads are
/// started only when that many calls block at once, and they end with the actor system.
/// One image's calls go through a lane of its own (<see cref="ForImage"/>): at most
/// <c>qcow2actors.io-threads-per-image</c> of them hold a thread at once and the rest wait in the
/// lane's queue, holding no thread, so an image whose disk hangs cannot take every thread of the
/// pool from the other images.
/// </remarks>
internal sealed class BlockingIo
{
    /// <summary>The engine's pool; its bound is <c>qcow2actors.io-threads</c>.</summary>
    public const string Engine = "engine";

    /// <summary>Bound of a pool whose HOCON key is missing.</summary>
    public const int DefaultMaxThreads = 128;

    /// <summary>Bound of one image's lane when <c>qcow2actors.io-threads-per-image</c> is missing.</summary>
    public const int DefaultMaxThreadsPerImage = 16;

    private readonly Pool _pool;
    private readonly Lane? _lane;

    private BlockingIo(Pool pool, Lane? lane = null)
    {
        _pool = pool;
        _lane = lane;
    }

    /// <summary>
    /// A new lane of the engine's pool for one image: at most <paramref name="maxThreads"/> of its
    /// calls (default: <c>qcow2actors.io-threads-per-image</c>) run at once; the others wait, in order,
    /// in the lane's own queue without holding a thread.
    /// </summary>
    public static BlockingIo ForImage(ActorSystem system, int? maxThreads = null)
    {
        var engine = For(system);
        return new(engine._pool, new Lane(maxThreads ?? system.Settings.Config.GetInt("qcow2actors.io-threads-per-image", DefaultMaxThreadsPerImage)));
    }

    /// <summary>
    /// The pool <paramref name="name"/> of <paramref name="system"/>, created on first use with at most
    /// <paramref name="maxThreads"/> threads (default: <c>qcow2actors.io-threads</c>).
    /// </summary>
    public static BlockingIo For(ActorSystem system, string name = Engine, int? maxThreads = null)
    {
        var pools = system.WithExtension<Pools, PoolsProvider>();
        return new(pools.Get(name, () => maxThreads ?? system.Settings.Config.GetInt("qcow2actors.io-threads", DefaultMaxThreads)));
    }

    /// <summary>Runs <paramref name="work"/> on an I/O thread; the task carries its exception.</summary>
    public Task Run(Action work) => Run(() =>
    {
        work();
        return true;
    });

    /// <summary>
    /// Starts <paramref name="work"/> on an I/O thread, for asynchronous code whose "asynchronous"
    /// reads complete inline (the file device reads on the calling thread).
    /// </summary>
    public Task<T> RunAsync<T>(Func<Task<T>> work) => Run(work).Unwrap();

    /// <summary>Runs <paramref name="work"/> on an I/O thread; the task carries its result or exception.</summary>
    public Task<T> Run<T>(Func<T> work)
    {
        // Continuations leave the I/O thread: an actor's go to its mailbox anyway, anyone else's to the pool.
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        void Call()
        {
            try
            {
                done.TrySetResult(work());
            }
            catch (Exception ex)
            {
                done.TrySetException(ex);
            }
        }
        void Stopped() => done.TrySetException(new IOException($"no I/O thread to run on: the actor system has stopped ({_pool.Name})"));
        if (_lane is null)
        {
            if (!_pool.TryQueue(Call)) Stopped();
        }
        else _lane.Queue(_pool, Call, Stopped);
        return done.Task;
    }

    /// <summary>The number of threads the pool has started (for tests).</summary>
    internal int Threads => _pool.Threads;

    /// <summary>Calls of this lane holding a thread now (for tests; 0 without a lane).</summary>
    internal int LaneRunning => _lane?.Running ?? 0;

    /// <summary>
    /// One image's share of the pool: up to its bound its calls go to the pool at once; beyond it
    /// they wait here, and each call that ends hands the pool the lane's next one.
    /// </summary>
    private sealed class Lane(int maxThreads)
    {
        private readonly Queue<(Action Call, Action Stopped)> _waiting = new();
        private readonly int _max = Math.Max(1, maxThreads);
        private int _running;

        public int Running
        {
            get
            {
                lock (_waiting) return _running;
            }
        }

        public void Queue(Pool pool, Action call, Action stopped)
        {
            lock (_waiting)
            {
                if (_running >= _max)
                {
                    _waiting.Enqueue((call, stopped));
                    return;
                }
                _running++;
            }
            Start(pool, call, stopped);
        }

        private void Start(Pool pool, Action call, Action stopped)
        {
            while (true)
            {
                if (pool.TryQueue(() =>
                    {
                        call();
                        Next(pool);
                    }))
                    return;
                stopped(); // the pool has stopped: this call, and every one waiting behind it, fails
                if (!TryTake(out call, out stopped)) return;
            }
        }

        private void Next(Pool pool)
        {
            // Back of the pool's queue, not on this thread: other lanes waiting for a thread get their turn.
            if (TryTake(out var call, out var stopped)) Start(pool, call, stopped);
        }

        private bool TryTake(out Action call, out Action stopped)
        {
            lock (_waiting)
            {
                if (_waiting.Count == 0)
                {
                    _running--;
                    call = stopped = null!;
                    return false;
                }
                (call, stopped) = _waiting.Dequeue();
                return true;
            }
        }
    }

    /// <summary>
    /// Threads that take queued work in order; a thread is started whenever work is queued and none
    /// is idle to take it, up to the bound, and none ends before the pool is stopped.
    /// </summary>
    private sealed class Pool(string name, int maxThreads)
    {
        private readonly Queue<Action> _work = new();
        private readonly int _max = Math.Max(1, maxThreads);
        private int _threads;
        private int _idle;
        private bool _stopped;

        public string Name => name;

        public int Threads
        {
            get
            {
                lock (_work) return _threads;
            }
        }

        public bool TryQueue(Action work)
        {
            lock (_work)
            {
                if (_stopped) return false;
                _work.Enqueue(work);
                // Idle threads that are already woken still count as idle until they take an item: each
                // queued item is matched by one of them, or by a new thread.
                if (_idle >= _work.Count)
                {
                    Monitor.Pulse(_work);
                    return true;
                }
                if (_threads >= _max) return true; // every thread is busy: the item waits for the first free one
                _threads++;
            }
            var thread = new Thread(Work) { IsBackground = true, Name = $"q2a-io-{name}" };
            thread.Start();
            return true;
        }

        public void Stop()
        {
            lock (_work)
            {
                _stopped = true;
                Monitor.PulseAll(_work);
            }
        }

        private void Work()
        {
            while (true)
            {
                Action next;
                lock (_work)
                {
                    while (_work.Count == 0)
                    {
                        if (_stopped)
                        {
                            _threads--;
                            return;
                        }
                        _idle++;
                        Monitor.Wait(_work);
                        _idle--;
                    }
                    next = _work.Dequeue();
                }
                next(); // never throws: Run catches into the task
            }
        }
    }

    /// <summary>The pools of one actor system, stopped when it terminates.</summary>
    private sealed class Pools : IExtension
    {
        private readonly Dictionary<string, Pool> _pools = new(StringComparer.Ordinal);
        private bool _stopped;

        public Pools(ActorSystem system) => system.RegisterOnTermination(Stop);

        public Pool Get(string name, Func<int> maxThreads)
        {
            lock (_pools)
            {
                if (!_pools.TryGetValue(name, out var pool))
                {
                    _pools[name] = pool = new Pool(name, maxThreads());
                    if (_stopped) pool.Stop();
                }
                return pool;
            }
        }

        private void Stop()
        {
            lock (_pools)
            {
                _stopped = true;
                foreach (var pool in _pools.Values) pool.Stop();
            }
        }
    }

    private sealed class PoolsProvider : ExtensionIdProvider<Pools>
    {
        public override Pools CreateExtension(ExtendedActorSystem system) => new(system);
    }
}
