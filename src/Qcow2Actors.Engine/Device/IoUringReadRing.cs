using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static Qcow2Actors.Engine.Device.IoUringNative;

namespace Qcow2Actors.Engine.Device;

/// <summary>
/// Asynchronous buffered file reads through one io_uring, served by one thread that both submits and
/// reaps. Why: a read that misses the page cache otherwise parks a pool thread in pread, and every such
/// read costs two thread wake-ups (the hand-off to the pool, then the disk's answer); on a paravirtualized
/// guest those switches were the largest single cost of a random-read NBD workload. io_uring reads a
/// buffered ext4/xfs file without any worker thread (the page's unlock completes the request), and with
/// SINGLE_ISSUER + DEFER_TASKRUN that completion work runs on this ring's thread when it asks for
/// events, so a batch of completions costs one wake-up and no other thread is disturbed.
/// </summary>
/// <remarks>
/// <para>Callers queue reads (<see cref="TryStartRead"/>, any thread); the ring thread moves them into the
/// submission ring, enters the kernel once per loop to submit and wait, and calls each completion on
/// itself. A caller that finds the thread asleep in the kernel wakes it through an eventfd that always
/// has a read pending in the ring.</para>
/// <para>At most <see cref="Capacity"/> reads are in flight; past that, and whenever the ring is closing,
/// <see cref="TryStartRead"/> says no and the caller reads the ordinary way. Each read holds a reference
/// on the file's handle and pins its buffer until it ends, so a device disposed with reads in flight
/// closes its file only after they complete.</para>
/// <para>Linux only, 6.1 or later for the flags above (older kernels get a ring without them; none at all
/// falls back to the caller's ordinary reads). <c>Q2A_IO_URING=0</c> in the environment turns it off.</para>
/// </remarks>
internal sealed unsafe class IoUringReadRing : IDisposable
{
    /// <summary>Reads in flight at most (the ring has room for these plus the eventfd read).</summary>
    public const int Capacity = 256;

    private const uint SqEntries = 512;

    /// <summary>user_data of the eventfd read; reads use their slot number + 1.</summary>
    private const ulong WakeTag = ulong.MaxValue;

    /// <summary>How long <see cref="Create(out string?)"/> waits for the ring thread to report its setup.</summary>
    private static readonly TimeSpan SetupTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How long <see cref="Dispose"/> waits for reads in flight before leaving the ring mapped.</summary>
    private static readonly TimeSpan CloseTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Retries of a read the kernel interrupted (EINTR/EAGAIN) before it fails.</summary>
    private const int MaxRetries = 3;

    private static readonly Lazy<IoUringReadRing?> s_shared = new(() =>
        Environment.GetEnvironmentVariable("Q2A_IO_URING") == "0" ? null : Create(out _));

    /// <summary>The process's ring, made on first use; null where io_uring is unavailable or turned off.</summary>
    public static IoUringReadRing? Shared => s_shared.Value;

    private readonly Lock _lock = new();
    private readonly Op[] _ops = new Op[Capacity];
    private readonly Stack<int> _free = new(Capacity);
    private readonly Queue<int> _pending = new(Capacity);
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _setupDone = new();
    private readonly ulong* _wakeBuffer = (ulong*)NativeMemory.AllocZeroed(sizeof(ulong));
    private int _sleeping;
    private volatile bool _closing;
    private bool _closed;
    private string? _setupError;
    private int _inFlight; // ring thread only: reads submitted and not yet completed

    // The ring, set up by the ring thread (SINGLE_ISSUER ties it to the thread that creates it).
    private int _ringFd = -1, _eventFd = -1;
    private void* _sqRing, _cqRing;
    private Sqe* _sqes;
    private nuint _sqRingSize, _cqRingSize, _sqesSize;
    private uint* _sqHead, _sqTail, _sqArray, _cqHead, _cqTail;
    private uint _sqMask, _sqEntries, _cqMask;
    private Cqe* _cqes;

    /// <summary>One read's state, reused; owned by the caller until queued, then by the ring thread.</summary>
    private sealed class Op
    {
        public SafeFileHandle? Handle;
        public string Path = "";
        public GCHandle Pin;
        public byte* Address;
        public int Count, Done, Retries;
        public long Offset;
        public IHostReadCompletion? Completion;
    }

    private IoUringReadRing()
    {
        for (var i = Capacity - 1; i >= 0; i--)
        {
            _ops[i] = new Op();
            _free.Push(i);
        }
        _thread = new Thread(Run) { IsBackground = true, Name = "q2a-io-uring" };
    }

    /// <summary>
    /// A ring with its thread running, or null (with <paramref name="why"/>) when this system cannot make
    /// one: not Linux, io_uring_setup refused (seccomp, an old kernel, a sysctl), or mmap failed.
    /// </summary>
    public static IoUringReadRing? Create(out string? why) => Create(SqEntries, out why);

    /// <summary><see cref="Create(out string?)"/> with a chosen ring size (tests use an invalid one to see setup fail).</summary>
    internal static IoUringReadRing? Create(uint entries, out string? why)
    {
        if (!OperatingSystem.IsLinux())
        {
            why = "io_uring is Linux only";
            return null;
        }
        var ring = new IoUringReadRing();
        try
        {
            ring._thread.Start(entries);
            if (!ring._setupDone.Wait(SetupTimeout)) why = "io_uring setup did not finish";
            else why = ring._setupError;
            if (why is not null) return null;
            var made = ring;
            ring = null;
            return made;
        }
        finally
        {
            // A failed setup: its thread has ended (or, if it never reported, Dispose gives up waiting and
            // leaves what it may still use).
            ring?.Dispose();
        }
    }

    /// <summary>
    /// Queues a read of <paramref name="count"/> bytes at <paramref name="offset"/> of <paramref name="handle"/>
    /// into <paramref name="buffer"/> from <paramref name="index"/>; true when <paramref name="completion"/> will
    /// be called (once, on the ring thread), false when nothing was started (full, closing, handle closed).
    /// </summary>
    public bool TryStartRead(SafeFileHandle handle, string path, byte[] buffer, int index, int count, long offset,
        IHostReadCompletion completion)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, buffer.Length - index);
        if (_closing) return false;
        int slot;
        lock (_lock)
        {
            if (_closing || !_free.TryPop(out slot)) return false;
        }
        var op = _ops[slot];
        var added = false;
        try
        {
            // The file stays open until the read ends, even if its device is disposed meanwhile.
            handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
        }
        if (!added)
        {
            lock (_lock) _free.Push(slot);
            return false;
        }
        op.Handle = handle;
        op.Path = path;
        op.Pin = GCHandle.Alloc(buffer, GCHandleType.Pinned);
        op.Address = (byte*)op.Pin.AddrOfPinnedObject() + index;
        op.Count = count;
        op.Done = 0;
        op.Retries = 0;
        op.Offset = offset;
        op.Completion = completion;
        lock (_lock)
        {
            // Dispose sets _closing under this lock: a read queued before it is seen by the closing ring thread.
            if (!_closing) _pending.Enqueue(slot);
            else
            {
                Reset(op);
                _free.Push(slot);
                return false;
            }
        }
        // The ring thread sets _sleeping before its last look at _pending: either it sees this read,
        // or we see it asleep and wake it.
        if (Volatile.Read(ref _sleeping) == 1 && Interlocked.Exchange(ref _sleeping, 0) == 1) Signal(_eventFd);
        return true;
    }

    /// <summary>
    /// Stops taking reads, lets those in flight complete (their completions are called), stops the thread
    /// and unmaps the ring. If reads are still in flight after a long wait (a hung disk), the ring is left
    /// mapped rather than freed under the kernel.
    /// </summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_closed) return;
            _closed = true;
            _closing = true;
        }
        if (_eventFd >= 0) Signal(_eventFd);
        if (_thread.ThreadState == ThreadState.Unstarted || _thread.Join(CloseTimeout)) FreeNative();
    }

    private void FreeNative()
    {
        Unmap(_sqes, _sqesSize);
        Unmap(_cqRing, _cqRingSize);
        Unmap(_sqRing, _sqRingSize);
        CloseFd(_ringFd);
        CloseFd(_eventFd);
        _sqes = null;
        _cqRing = _sqRing = null;
        _ringFd = _eventFd = -1;
        NativeMemory.Free(_wakeBuffer);
        _setupDone.Dispose();
    }

    private void Run(object? entries)
    {
        _setupError = SetUp((uint)entries!);
        _setupDone.Set();
        if (_setupError is not null) return;
        Loop();
    }

    /// <summary>Creates the ring on this thread and maps it; null on success, else why not.</summary>
    private string? SetUp(uint entries)
    {
        var eventFd = CreateEventFd();
        if (eventFd < 0) return $"eventfd failed: {Marshal.GetPInvokeErrorMessage(-eventFd)}";
        _eventFd = eventFd;
        Params p = default;
        p.Flags = SetupSingleIssuer | SetupDeferTaskrun;
        var fd = IoUringNative.Setup(entries, &p);
        if (fd == -HostFileCalls.Einval && entries != 0)
        {
            // A kernel before 6.1 does not know the flags: a plain ring still reads without worker threads,
            // only its completion work interrupts the submitting thread (always this one here).
            p = default;
            fd = IoUringNative.Setup(entries, &p);
        }
        if (fd < 0) return $"io_uring_setup failed: {Marshal.GetPInvokeErrorMessage(-fd)}";
        _ringFd = fd;
        _sqRingSize = (nuint)p.SqOff.Array + (nuint)p.SqEntries * sizeof(uint);
        _cqRingSize = (nuint)p.CqOff.Cqes + (nuint)p.CqEntries * (nuint)sizeof(Cqe);
        _sqesSize = (nuint)p.SqEntries * (nuint)sizeof(Sqe);
        _sqRing = Map(fd, _sqRingSize, OffSqRing);
        _cqRing = Map(fd, _cqRingSize, OffCqRing);
        _sqes = (Sqe*)Map(fd, _sqesSize, OffSqes);
        if (_sqRing is null || _cqRing is null || _sqes is null) return "mmap of the io_uring failed";
        var sq = (byte*)_sqRing;
        var cq = (byte*)_cqRing;
        _sqHead = (uint*)(sq + p.SqOff.Head);
        _sqTail = (uint*)(sq + p.SqOff.Tail);
        _sqMask = *(uint*)(sq + p.SqOff.RingMask);
        _sqEntries = *(uint*)(sq + p.SqOff.RingEntries);
        _sqArray = (uint*)(sq + p.SqOff.Array);
        _cqHead = (uint*)(cq + p.CqOff.Head);
        _cqTail = (uint*)(cq + p.CqOff.Tail);
        _cqMask = *(uint*)(cq + p.CqOff.RingMask);
        _cqes = (Cqe*)(cq + p.CqOff.Cqes);
        if (_sqEntries < Capacity + 1 || p.CqEntries < Capacity + 1) return $"io_uring gave only {_sqEntries} entries";
        return null;
    }

    private void Loop()
    {
        var wakeArmed = false;
        var retry = new Queue<int>();
        while (true)
        {
            // Once closing: no new reads are taken; finish those in flight and the eventfd read
            // (Dispose signalled it), then stop. Nothing of ours is left in the kernel.
            if (_closing && _inFlight == 0 && !wakeArmed && retry.Count == 0)
            {
                lock (_lock)
                {
                    if (_pending.Count == 0) return;
                }
            }
            if (!wakeArmed && !_closing)
            {
                Push(new Sqe { Opcode = OpRead, Fd = _eventFd, Addr = (ulong)_wakeBuffer, Len = sizeof(ulong), Off = ulong.MaxValue, UserData = WakeTag });
                wakeArmed = true;
            }
            while (retry.TryDequeue(out var again)) PushRead(again);
            lock (_lock)
            {
                while (_pending.TryDequeue(out var slot))
                {
                    PushRead(slot);
                    _inFlight++;
                }
            }
            // Everything the kernel has not consumed yet (an earlier enter may have stopped short).
            var toSubmit = *_sqTail - Volatile.Read(ref *_sqHead);

            uint wait = 0;
            if (Volatile.Read(ref *_cqTail) == *_cqHead)
            {
                Interlocked.Exchange(ref _sleeping, 1);
                bool more;
                lock (_lock) more = _pending.Count > 0;
                // Sleep only with nothing queued; a caller that saw us asleep will signal the eventfd.
                if (!more) wait = 1;
                else Interlocked.Exchange(ref _sleeping, 0);
            }
            var r = Enter(_ringFd, toSubmit, wait, EnterGetEvents);
            Volatile.Write(ref _sleeping, 0);
            // EINTR, EAGAIN, EBUSY: try again next turn. Anything else means our ring is broken (a bug, not
            // a disk error: those come back per read); reads in flight could never be answered, so stop loudly.
            if (r < 0 && r != -Eintr && r != -Eagain && r != -Ebusy)
                Environment.FailFast($"io_uring_enter failed: {Marshal.GetPInvokeErrorMessage(-r)}");

            var head = *_cqHead;
            var tail = Volatile.Read(ref *_cqTail);
            while (head != tail)
            {
                var cqe = _cqes[head & _cqMask];
                head++;
                if (cqe.UserData == WakeTag)
                {
                    wakeArmed = false;
                    continue;
                }
                var slot = (int)(cqe.UserData - 1);
                if (Completed(slot, cqe.Res)) _inFlight--;
                else retry.Enqueue(slot);
            }
            Volatile.Write(ref *_cqHead, head);
        }
    }

    private void PushRead(int slot)
    {
        var op = _ops[slot];
        Push(new Sqe
        {
            Opcode = OpRead,
            Fd = (int)op.Handle!.DangerousGetHandle(),
            Addr = (ulong)(op.Address + op.Done),
            Len = (uint)(op.Count - op.Done),
            Off = (ulong)(op.Offset + op.Done),
            UserData = (ulong)slot + 1,
        });
    }

    /// <summary>Writes one entry at the submission tail (room is certain: at most Capacity + 1 are ever out).</summary>
    private void Push(in Sqe sqe)
    {
        var tail = *_sqTail;
        var index = tail & _sqMask;
        _sqes[index] = sqe;
        _sqArray[index] = index;
        // Release: the kernel must see the entry before the new tail.
        Volatile.Write(ref *_sqTail, tail + 1);
    }

    /// <summary>Unpins the buffer and lets go of the file: the read is over.</summary>
    private static void Reset(Op op)
    {
        op.Pin.Free();
        op.Handle!.DangerousRelease();
        op.Handle = null;
        op.Completion = null;
        op.Address = null;
    }

    /// <summary>Handles a read's result; true when it has ended (its completion called), false to resubmit the rest.</summary>
    private bool Completed(int slot, int res)
    {
        var op = _ops[slot];
        if (res > 0 && op.Done + res < op.Count)
        {
            op.Done += res; // a short read before the end of the file: read on from there
            return false;
        }
        if ((res == -Eintr || res == -Eagain) && op.Retries++ < MaxRetries) return false;
        Exception? error = null;
        if (res > 0) op.Done += res;
        else if (res < 0)
            error = new IOException(
                $"reading {op.Count} bytes at {op.Offset} from {op.Path} failed: {Marshal.GetPInvokeErrorMessage(-res)}", -res);
        var (completion, done) = (op.Completion!, op.Done);
        Reset(op);
        lock (_lock) _free.Push(slot);
        try
        {
            completion.OnHostReadCompleted(done, error);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The contract says completions do not throw; one that does must not stop every other read.
            System.Diagnostics.Trace.TraceError($"io_uring read completion threw: {ex}");
        }
        return true;
    }
}
