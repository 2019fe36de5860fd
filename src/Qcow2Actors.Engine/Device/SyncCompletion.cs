namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The synchronous forms of <see cref="BlockDevice"/>: a device's core usually completes before it
/// returns (the result is then taken with no wait); otherwise the calling thread waits for it.
/// </summary>
/// <remarks>
/// The only place in src that waits on a task, on purpose: table write-back, recovery and the offline
/// editors are synchronous code that needs the bytes on its own thread, and the cores that do not
/// complete at once (a retry backing off, a test's gate) run nothing on the waiting thread, so the wait
/// cannot deadlock. Callers that can await use the asynchronous forms instead.
/// </remarks>
internal static class SyncCompletion
{
    public static T Wait<T>(ValueTask<T> task) =>
        task.IsCompletedSuccessfully ? task.Result : task.AsTask().GetAwaiter().GetResult();

    public static void Wait(ValueTask task)
    {
        if (task.IsCompletedSuccessfully)
        {
            task.GetAwaiter().GetResult();
            return;
        }
        task.AsTask().GetAwaiter().GetResult();
    }
}
