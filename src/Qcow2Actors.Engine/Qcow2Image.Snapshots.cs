using Akka.Actor;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine;

// Internal snapshots and check of an open image while other callers keep issuing I/O. Every
// request of a writable image passes _gate; an edit closes it: new requests wait (they do not
// fail), those in flight finish, the image actor checkpoints the image as a clean close would,
// runs the offline editor on the device it already holds, reloads its tables from the file, and
// the gate opens again.
public sealed partial class Qcow2Image
{
    private readonly RequestGate _gate = new();

    /// <summary>True while an online edit holds the image's requests (for tests).</summary>
    internal bool EditHoldsRequests => _gate.IsClosed;

    /// <summary>Completes once an online edit holds the image's requests (for tests: at once while one does).</summary>
    internal Task EditHoldingRequests => _gate.Closed;

    /// <summary>Requests inside the gate now, a cancelled one whose work still runs included (for tests).</summary>
    internal int RequestsInside => _gate.Inside;

    /// <summary>
    /// The internal snapshots of the image, in table order (copies: changing them changes nothing).
    /// Works on read-only images too. While a snapshot edit runs, waits for it to finish.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The image is closed.</exception>
    /// <exception cref="Qcow2ImageCorruptException">A read-only image's snapshot table lies outside the file.</exception>
    public async ValueTask<IReadOnlyList<SnapshotEntry>> ListSnapshotsAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_ctx is { } ctx)
        {
            using var admitted = await _gate.EnterAsync(cancellationToken).ConfigureAwait(false);
            return [.. ctx.Snapshots.Select(s => s.Clone())];
        }
        if (_qcow2 is null || _openedHeader is null) return [];
        return SnapshotSession.ReadSnapshots(_qcow2.File, _openedHeader);
    }

    /// <summary>
    /// Creates snapshot <paramref name="name"/> of the disk as it is once the writes in flight have
    /// finished (the next numeric ID, the time now, no VM state), as QEMU's
    /// <c>blockdev-snapshot-internal-sync</c> does on a running image. Writes arriving meanwhile wait
    /// and then land after the snapshot; none fails. Durable on return.
    /// </summary>
    /// <param name="name">The snapshot's name: 1 to 255 UTF-8 bytes, no control characters, not used by another snapshot.</param>
    /// <param name="cancellationToken">Stops waiting for the requests in flight; once the edit has started it runs to the end.</param>
    /// <returns>The new snapshot.</returns>
    /// <exception cref="SnapshotEditException">
    /// Refused, nothing written: <see cref="SnapshotEditException.BadNameCode"/>,
    /// <see cref="SnapshotEditException.ExistsCode"/>, or <see cref="SnapshotEditException.RefusedCode"/>
    /// (open read-only, 1-bit refcounts, external data file, QEMU's snapshot or refcount limits).
    /// </exception>
    /// <exception cref="IOException">The image turned read-only (a failed fsync, or an edit that failed part way).</exception>
    public async ValueTask<SnapshotEntry> CreateSnapshotAsync(string name, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        string verb = $"create snapshot '{name}'";
        if (NameProblem(name) is { } problem)
            throw new SnapshotEditException($"Could not {verb}: {problem}", SnapshotEditException.BadNameCode);
        var ctx = EditTarget(verb);
        ThrowIfNameTaken(ctx, name, verb);
        // What the editor would refuse anyway, refused here without pausing the image's clients.
        var header = ctx.Headers.Snapshot;
        if (header.HasExternalDataFile || header.RefcountOrder == 0)
            throw new SnapshotEditException(header.HasExternalDataFile
                ? $"Could not {verb}: images with an external data file do not support internal snapshots"
                : $"Could not {verb}: with 1-bit refcounts no cluster can be shared (convert with -o refcount_bits=16)");
        var created = await EditOnlineAsync(device =>
        {
            // Again under the closed gate: another edit may have run since the check above.
            ThrowIfNameTaken(ctx, name, verb);
            return SnapshotEditor.Create(device, name, DateTimeOffset.UtcNow, online: true);
        }, changesImage: true, cancellationToken).ConfigureAwait(false);
        return (SnapshotEntry)created!;
    }

    /// <summary>
    /// Deletes snapshot <paramref name="idOrName"/> (an ID first, then a name) and frees what only it
    /// referenced; the disk's content does not change. Requests meanwhile wait, none fails.
    /// </summary>
    /// <param name="idOrName">Snapshot ID or name.</param>
    /// <param name="cancellationToken">Stops waiting for the requests in flight; once the edit has started it runs to the end.</param>
    /// <returns>The snapshot deleted.</returns>
    /// <exception cref="SnapshotEditException">Refused, nothing written: <see cref="SnapshotEditException.NotFoundCode"/> or <see cref="SnapshotEditException.RefusedCode"/>.</exception>
    /// <exception cref="IOException">The image turned read-only (a failed fsync, or an edit that failed part way).</exception>
    public async ValueTask<SnapshotEntry> DeleteSnapshotAsync(string idOrName, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(idOrName);
        string verb = $"delete snapshot '{idOrName}'";
        var ctx = EditTarget(verb);
        Find(ctx, idOrName, verb);
        var deleted = await EditOnlineAsync(device =>
            SnapshotEditor.Delete(device, Find(ctx, idOrName, verb).Id, byIdFirst: true, online: true),
            changesImage: true, cancellationToken).ConfigureAwait(false);
        return (SnapshotEntry)deleted!;
    }

    /// <summary>
    /// Reverts the disk to snapshot <paramref name="idOrName"/> (an ID first, then a name): reads
    /// that start after this returns see the snapshot's content, and the virtual size becomes the
    /// snapshot's (a client that connects again sees it). Writes in flight land before the revert,
    /// writes that arrive meanwhile after it; none fails. The snapshot stays. Durable on return.
    /// </summary>
    /// <param name="idOrName">Snapshot ID or name.</param>
    /// <param name="cancellationToken">Stops waiting for the requests in flight; once the edit has started it runs to the end.</param>
    /// <returns>The snapshot applied.</returns>
    /// <exception cref="SnapshotEditException">Refused, nothing written: <see cref="SnapshotEditException.NotFoundCode"/> or <see cref="SnapshotEditException.RefusedCode"/>.</exception>
    /// <exception cref="IOException">The image turned read-only (a failed fsync, or an edit that failed part way).</exception>
    public async ValueTask<SnapshotEntry> ApplySnapshotAsync(string idOrName, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(idOrName);
        string verb = $"apply snapshot '{idOrName}'";
        var ctx = EditTarget(verb);
        var snapshot = Find(ctx, idOrName, verb);
        if (ctx.Bitmaps is { Entries.Count: > 0 } bitmaps)
        {
            // Persistent bitmaps cover the disk as it is: one of another size would no longer fit it.
            if ((snapshot.DiskSize ?? VirtualSize) != VirtualSize)
                throw new SnapshotEditException($"Could not {verb}: its disk size differs and '{ctx.Path}' has persistent bitmaps (remove them first)");
            // The revert may change any byte of the disk: every granule is dirty for a tracked bitmap.
            bitmaps.MarkWhole();
        }
        var applied = await EditOnlineAsync(device =>
            SnapshotEditor.Apply(device, Find(ctx, idOrName, verb).Id, online: true),
            changesImage: true, cancellationToken).ConfigureAwait(false);
        return (SnapshotEntry)applied!;
    }

    /// <summary>
    /// Checks the image read-only, as <c>q2a check</c> (and <c>qemu-img check</c>) would find it after
    /// a clean close: a writable image is first checkpointed with its writes paused (requests
    /// meanwhile wait, none fails), then checked while they stay paused; a read-only image is checked as opened.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting for the requests in flight; once the check has started it runs to the end.</param>
    /// <returns>Counts and messages as <see cref="ImageChecker.Check(IBlockDevice, string)"/> reports them.</returns>
    /// <exception cref="InvalidOperationException">A raw image (it has no metadata to check).</exception>
    /// <exception cref="IOException">The image turned read-only after a failure: check it after closing it.</exception>
    public async ValueTask<CheckResult> CheckAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        string name = Info.FileName;
        if (_ctx is null)
        {
            var file = _qcow2?.File ?? throw new InvalidOperationException($"Could not check '{name}': a {Info.Format} image has no metadata to check");
            return await Task.Run(() => ImageChecker.Check(file, name), cancellationToken).ConfigureAwait(false);
        }
        _ctx.ThrowIfReadOnly();
        var result = await EditOnlineAsync(device => ImageChecker.Check(device, name), changesImage: false, cancellationToken).ConfigureAwait(false);
        return (CheckResult)result!;
    }

    /// <summary>The gate for a request: open for read-only images, which no edit changes.</summary>
    private ValueTask<RequestGate.Admission> EnterAsync(CancellationToken cancellationToken) =>
        _ctx is null ? new ValueTask<RequestGate.Admission>(default(RequestGate.Admission)) : _gate.EnterAsync(cancellationToken);

    /// <summary>A read of a writable image: through the gate, the range checked once inside (an apply may change the size).</summary>
    private ValueTask ReadAdmittedAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (!_gate.TryEnter()) return ReadAfterWaitAsync(offset, buffer, cancellationToken);
        ValueTask read;
        try
        {
            CheckRange(offset, buffer.Length);
            read = buffer.Length == 0 ? ValueTask.CompletedTask : _top.ReadAsync(offset, buffer, cancellationToken);
        }
        catch
        {
            _gate.Exit();
            throw;
        }
        // Hot path: no state machine when the read completed at once (cached, mapped reads).
        if (read.IsCompletedSuccessfully)
        {
            _gate.Exit();
            return ValueTask.CompletedTask;
        }
        return ExitAfterAsync(read);
    }

    private async ValueTask ExitAfterAsync(ValueTask read)
    {
        try
        {
            await read.ConfigureAwait(false);
        }
        finally
        {
            _gate.Exit();
        }
    }

    private async ValueTask ReadAfterWaitAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        using var admitted = await _gate.EnterAsync(cancellationToken).ConfigureAwait(false);
        CheckRange(offset, buffer.Length);
        if (buffer.Length > 0) await _top.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The write side an edit needs, or the one-line refusal (closed, read-only, failed).</summary>
    private ImageContext EditTarget(string verb)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_ctx is null)
            throw new SnapshotEditException($"Could not {verb}: '{Info.FileName}' is open read-only", SnapshotEditException.RefusedCode);
        _ctx.ThrowIfReadOnly();
        return _ctx;
    }

    /// <summary>
    /// Runs <paramref name="edit"/> in the image actor with the gate closed; reopens it when done.
    /// </summary>
    private async ValueTask<object?> EditOnlineAsync(Func<IBlockDevice, object?> edit, bool changesImage, CancellationToken cancellationToken)
    {
        var closure = await _gate.CloseAsync(cancellationToken).ConfigureAwait(false);
        var done = new TaskCompletionSource<object?>(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            _ctx!.ThrowIfReadOnly();
            _imageActor!.Tell(new OnlineEditRequest(edit, changesImage, done));
        }
        catch
        {
            closure.Dispose();
            throw;
        }
        // Once sent, an edit is waited for to its end (or the host's stop): it is not given up half done.
        await AwaitActorAsync(done.Task, closure, changesImage ? RefreshInfo : null, CancellationToken.None).ConfigureAwait(false);
        return await done.Task.ConfigureAwait(false); // complete by now: its result, or its own exception unwrapped
    }

    /// <summary>
    /// Waits for work handed to the image actor while <paramref name="hold"/> (the caller's admission, or its
    /// closure of the gate) is held; if the work succeeded, runs <paramref name="thenAsync"/> (still under the hold, still
    /// cancellable) and <paramref name="after"/>, then lets the hold go.
    /// A cancelled wait returns to the caller at once, but the work cannot be called back: the hold is let go (and
    /// <paramref name="after"/> run) only when it has finished, so the gate never opens under an edit still running.
    /// If the image host stops first the actor never answers: the hold is let go then.
    /// </summary>
    private async ValueTask AwaitActorAsync(Task work, IDisposable hold, Action? after, CancellationToken cancellationToken,
        Func<CancellationToken, ValueTask>? thenAsync = null)
    {
        var ended = Task.WhenAny(work, _abandoned.Task);
        try
        {
            await ended.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Runs at once if the work has ended meanwhile.
            _ = ended.ContinueWith(static (_, state) =>
            {
                var (work, hold, after) = ((Task, IDisposable, Action?))state!;
                try
                {
                    if (work.IsCompletedSuccessfully) after?.Invoke();
                }
                finally
                {
                    hold.Dispose();
                }
            }, (work, hold, after), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            throw;
        }
        catch
        {
            hold.Dispose();
            throw;
        }
        try
        {
            if (!work.IsCompleted) throw new ObjectDisposedException(Info.FileName, "its image host stopped during the request or edit");
            await work.ConfigureAwait(false);
            if (thenAsync is not null) await thenAsync(cancellationToken).ConfigureAwait(false);
            after?.Invoke();
        }
        finally
        {
            hold.Dispose();
        }
    }

    /// <summary>Brings <see cref="Info"/>'s size and snapshot list up to date after a resize or snapshot edit.</summary>
    private void RefreshInfo()
    {
        if (_ctx is not { } ctx) return;
        _info = _info with
        {
            VirtualSize = VirtualSize,
            Snapshots = [.. ctx.Snapshots.Select(s => new Qcow2SnapshotInfo(s.Id, s.Name, s.DiskSize))],
        };
    }

    private static SnapshotEntry Find(ImageContext ctx, string idOrName, string verb) =>
        ctx.Snapshots.FirstOrDefault(e => e.Id == idOrName) ?? ctx.Snapshots.FirstOrDefault(e => e.Name == idOrName)
        ?? throw new SnapshotEditException($"Could not {verb}: '{ctx.Path}' has no snapshot with that ID or name", SnapshotEditException.NotFoundCode);

    private static void ThrowIfNameTaken(ImageContext ctx, string name, string verb)
    {
        if (ctx.Snapshots.FirstOrDefault(e => e.Name == name) is { } taken)
            throw new SnapshotEditException($"Could not {verb}: '{ctx.Path}' already has a snapshot of that name (ID {taken.Id})", SnapshotEditException.ExistsCode);
    }

    /// <summary>Null for a name an online create accepts, else what is wrong with it.</summary>
    private static string? NameProblem(string name)
    {
        if (name.Length == 0) return "the name is empty";
        if (System.Text.Encoding.UTF8.GetByteCount(name) > SnapshotEditor.MaxNameBytes)
            return $"the name is longer than {SnapshotEditor.MaxNameBytes} bytes";
        if (name.Any(char.IsControl)) return "the name holds a control character";
        return null;
    }
}
