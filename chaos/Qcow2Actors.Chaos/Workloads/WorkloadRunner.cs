namespace Qcow2Actors.Chaos.Workloads;

/// <summary>
/// Runs a <see cref="Workload"/> against an <see cref="IChaosTarget"/>, one op at a time,
/// keeping a <see cref="DiskModel"/> in step and writing the <see cref="ChaosProtocol"/> lines,
/// so the same code serves an in-process crash test and a child process that gets SIGKILLed.
/// </summary>
public static class WorkloadRunner
{
    /// <summary>
    /// Issues ops <paramref name="first"/>.. of <paramref name="workload"/> in order. When an op
    /// throws (a power cut, an injected EIO), it is recorded in <paramref name="model"/> as
    /// interrupted (it may have partly landed, it guarantees nothing) and the exception propagates.
    /// </summary>
    /// <param name="target">The disk to drive.</param>
    /// <param name="workload">The ops and their data.</param>
    /// <param name="model">Updated as ops complete; null when only the protocol lines matter (a child process).</param>
    /// <param name="protocol">Receives the protocol lines, each flushed before the op they announce proceeds.</param>
    /// <param name="first">Index of the first op to run (to resume after a simulated reboot).</param>
    /// <param name="count">How many ops to run; null runs to the end.</param>
    /// <param name="cancellationToken">Stops between ops.</param>
    /// <returns>The index after the last op completed.</returns>
    public static async Task<int> RunAsync(IChaosTarget target, Workload workload, DiskModel? model = null, TextWriter? protocol = null,
        int first = 0, int? count = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(workload);
        var end = count is { } c ? Math.Min(workload.Operations.Count, first + c) : workload.Operations.Count;
        for (var i = first; i < end; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var op = workload.Operations[i];
            // STARTED must be out before the op is issued: the parent treats later ops as never run.
            await Emit(protocol, ChaosProtocol.StartedLine(i));
            try
            {
                await Execute(target, workload, op, cancellationToken);
            }
            catch
            {
                model?.Apply(workload, op, completed: false);
                throw;
            }
            model?.Apply(workload, op);
            await Emit(protocol, op.Kind == WorkloadOpKind.Flush ? ChaosProtocol.FlushedLine(i) : ChaosProtocol.DoneLine(i));
        }
        return end;
    }

    /// <summary>Issues one op against <paramref name="target"/>.</summary>
    public static async ValueTask Execute(IChaosTarget target, Workload workload, WorkloadOp op, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(workload);
        switch (op.Kind)
        {
            case WorkloadOpKind.Write:
                await target.WriteAsync(op.Offset, workload.DataFor(op), op.Fua, cancellationToken);
                break;
            case WorkloadOpKind.WriteZeroes:
                await target.WriteZeroesAsync(op.Offset, op.Length, op.Unmap, op.Fua, cancellationToken);
                break;
            case WorkloadOpKind.Discard:
                await target.DiscardAsync(op.Offset, op.Length, cancellationToken);
                break;
            default:
                await target.FlushAsync(cancellationToken);
                break;
        }
    }

    private static async ValueTask Emit(TextWriter? protocol, string line)
    {
        if (protocol is null) return;
        await protocol.WriteLineAsync(line);
        await protocol.FlushAsync();
    }
}
