using Akka.Actor;
using Qcow2Actors.Engine.Snapshots;

namespace Qcow2Actors.Engine.Write;

// Online snapshot edits and checks of the open image (OnlineEditRequest): one handler, so the
// mailbox holds timers' checkpoints and sweeps until the edit is done and the image reloaded.
internal sealed partial class ImageActor
{
    private async Task OnlineEditAsync(OnlineEditRequest m)
    {
        var ctx = _ctx!;
        List<IActorRef>? paused = null;
        bool stopped = false;
        try
        {
            ctx.ThrowIfReadOnly();
            // Before the pause: a direct send that reached a paused table would be stranded in its stash when the edit stops it.
            ctx.Routes.CloseAll();
            paused = await PauseTablesAsync();
            // Forced (as at close): tables and refcounts in place, header clean, journal truncated.
            await CheckpointAsync(closing: true, paused);
            if (!m.ChangesImage)
            {
                m.Done.TrySetResult(await _io.Run(() => m.Edit(ctx.Device)));
                return;
            }
            // Table actors hold their table's words and location: the edit changes both under them.
            StopAllTables();
            stopped = true;
            object? result;
            try
            {
                result = await _io.Run(() => OnlineSnapshotEdit.Run(ctx, m.Edit));
                await _io.RunAsync(async () =>
                {
                    await OnlineSnapshotEdit.ReloadAsync(ctx);
                    return true;
                });
            }
            catch (Exception ex) when (ex is not SnapshotEditException)
            {
                // Something failed part way: the dirty bit stays on disk, so the next open repairs
                // what the edit left; until then nothing more is written.
                ctx.Fail(ex is Qcow2ImageCorruptException ? Qcow2ImageFaultKind.Corrupt : Qcow2ImageFaultKind.ReadOnly,
                    $"snapshot edit failed: {ex.Message}");
                throw;
            }
            m.Done.TrySetResult(result);
        }
        catch (Exception ex)
        {
            m.Done.TrySetException(ex);
        }
        finally
        {
            if (stopped) RerouteHeld();
            else if (paused is not null) foreach (var t in paused) t.Tell(new ResumeMutations());
        }
    }

    /// <summary>Stops every live table actor; new ones start on demand from the reloaded view.</summary>
    private void StopAllTables()
    {
        foreach (var (index, child) in _tables)
        {
            // Their Terminated still arrives and is handled as for any stopped table (_tableIndex).
            Context.Stop(child);
            _lastUse.Remove(index);
            _idle.Forget(index);
        }
        _tables.Clear();
    }

    /// <summary>Requests held for tables that were being passivated go to new table actors.</summary>
    private void RerouteHeld()
    {
        foreach (var (index, held) in _passivating.ToList())
        {
            _passivating.Remove(index);
            foreach (var msg in held) Route(new RouteToTable(index, msg));
        }
        AnswerInspectors();
    }
}
