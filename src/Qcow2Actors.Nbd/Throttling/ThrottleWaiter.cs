using System.Threading.RateLimiting;

namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// A request waiting in a throttle group: queued on its member's list for its direction until the
/// group admits it, the export leaves the group, or its cancellation token fires.
/// </summary>
internal sealed class ThrottleWaiter : TaskCompletionSource<RateLimitLease>
{
    private readonly Lock _registrationLock = new();
    private CancellationTokenRegistration _registration;
    private bool _finished;

    public ThrottleWaiter(ThrottleMember member, ThrottleDirection direction, long bytes, int operations)
        : base(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        Member = member;
        Direction = direction;
        Bytes = bytes;
        Operations = operations;
        Node = new LinkedListNode<ThrottleWaiter>(this);
    }

    public ThrottleMember Member { get; }

    public ThrottleDirection Direction { get; }

    public long Bytes { get; }

    public int Operations { get; }

    /// <summary>Its place in the member's queue; <c>Node.List</c> is null once it left the queue.</summary>
    public LinkedListNode<ThrottleWaiter> Node { get; }

    /// <summary>Watches <paramref name="token"/>; called after the waiter is queued, outside the group's lock.</summary>
    public void Watch(CancellationToken token)
    {
        if (!token.CanBeCanceled) return;
        var registration = token.UnsafeRegister(static (state, t) => ((ThrottleWaiter)state!).Member.Group.Cancel((ThrottleWaiter)state!, t), this);
        bool late;
        lock (_registrationLock)
        {
            late = _finished;
            if (!late) _registration = registration;
        }
        // Already answered: the registration would otherwise stay on a long-lived connection token.
        if (late) registration.Unregister();
    }

    /// <summary>Answers the waiter (outside the group's lock) and stops watching its token.</summary>
    public void Finish(RateLimitLease? lease, CancellationToken canceledBy = default)
    {
        CancellationTokenRegistration registration;
        lock (_registrationLock)
        {
            _finished = true;
            registration = _registration;
            _registration = default;
        }
        // Unregister, not Dispose: this may run inside the token's own callback, which must not wait for itself.
        registration.Unregister();
        if (lease is null) TrySetCanceled(canceledBy);
        else TrySetResult(lease);
    }
}
