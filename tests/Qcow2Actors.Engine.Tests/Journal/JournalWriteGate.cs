using Akka.Persistence;
using Akka.Persistence.TestKit;

namespace Qcow2Actors.Engine.Tests.Journal;

/// <summary>
/// An interceptor for Akka.Persistence.TestKit's journal that holds every write until the test
/// opens it: a slow journal without a clock. <see cref="Entered"/> completes when the first write
/// waits, so a test knows its write reached the journal and is being held.
/// </summary>
public sealed class JournalWriteGate : IJournalInterceptor
{
    private readonly TaskCompletionSource _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when a write first waits at the gate.</summary>
    public Task Entered => _entered.Task;

    /// <summary>Lets every held and later write through.</summary>
    public void Open() => _open.TrySetResult();

    /// <inheritdoc />
    public Task InterceptAsync(IPersistentRepresentation message)
    {
        _entered.TrySetResult();
        return _open.Task;
    }

    /// <summary>Holds the writes of <paramref name="journal"/> at a new gate.</summary>
    public static async Task<JournalWriteGate> CloseOn(ITestJournal journal)
    {
        var gate = new JournalWriteGate();
        await journal.OnWrite.SetInterceptorAsync(gate);
        return gate;
    }
}
