using Qcow2Actors.Nbd;

namespace Qcow2Actors.CrashLab;

/// <summary>
/// Serves another export and records every change a guest makes to it (WRITE, WRITE_ZEROES, TRIM,
/// FLUSH, and the FUA flag) into a <see cref="CrashLogWriter"/>, in the order the operations reach
/// the image: each one's Begin record is appended before it is issued, its Complete record after the
/// image finished it and before the client's reply, so a reply the guest saw implies a completion in
/// the log. After a FLUSH or a FUA operation the log itself is made durable before the reply, so the
/// log holds at least what the guest was promised is on disk.
/// </summary>
/// <remarks>
/// Reads, block status and the <c>qemu:</c> metadata contexts pass straight through. An operation the
/// image fails is recorded with ok=false and its error reaches the client unchanged. When the log
/// cannot be written the request fails with EIO naming the log (an acknowledged write missing from the
/// log would make every crash state built from it wrong). <see cref="StartAsync"/> is the usual way in:
/// it takes the base snapshot first. Calls arrive concurrently from many connections; the writer
/// orders the records.
/// </remarks>
public sealed class RecordingExport : INbdExport, IAsyncDisposable
{
    private readonly INbdExport _inner;
    private readonly CrashLogWriter _log;
    private readonly bool _ownsInner;
    private int _disposed;

    /// <summary>
    /// Records <paramref name="inner"/>'s changes into <paramref name="log"/>, which this export then owns
    /// (closed by <see cref="DisposeAsync"/>). <paramref name="inner"/> is disposed with it only when
    /// <paramref name="ownsInner"/>. Taking the base snapshot and writing the header is the caller's job
    /// (see <see cref="StartAsync"/>).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="inner"/> is read-only: there is nothing to record.</exception>
    public RecordingExport(INbdExport inner, CrashLogWriter log, bool ownsInner = false)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(log);
        if (inner.IsReadOnly) throw new ArgumentException($"cannot record export '{inner.Name}': it is read-only, a recording needs a writable export");
        _inner = inner;
        _log = log;
        _ownsInner = ownsInner;
    }

    /// <summary>The export recorded.</summary>
    public INbdExport Inner => _inner;

    /// <summary>The log file's path.</summary>
    public string LogPath => _log.Path;

    /// <summary>Makes the log durable after a FLUSH or FUA; tests watch it through this seam (the writer's own flush by default).</summary>
    internal Func<CrashLogWriter, ValueTask> FlushLog { get; init; } = static log => log.FlushAsync();

    /// <summary>The internal snapshot the recording starts from (null when the caller made the export without <see cref="StartAsync"/>).</summary>
    public string? BaseSnapshot { get; private init; }

    /// <summary>
    /// Starts recording a qcow2 export: refuses an existing <paramref name="logPath"/>, takes the base
    /// snapshot <c>q2a-record-yyyyMMddTHHmmssZ</c> of the served image online (writes in flight finish
    /// first), creates the log with its header, and returns the recording export. Call it before the
    /// first guest request reaches <paramref name="export"/>.
    /// </summary>
    /// <param name="export">The qcow2 export to record; writable, on a qcow2 image.</param>
    /// <param name="logPath">The new log file; never an existing one.</param>
    /// <param name="ownsInner">Dispose <paramref name="export"/> with the recording export.</param>
    /// <param name="time">The clock for the start time and the snapshot's name; null: the system clock.</param>
    /// <param name="cancellationToken">Stops waiting for the snapshot.</param>
    /// <exception cref="ArgumentException">The export is read-only or its image is raw (no internal snapshots); one line.</exception>
    /// <exception cref="IOException"><paramref name="logPath"/> exists or cannot be created (no snapshot is left behind); one line naming it.</exception>
    public static async Task<RecordingExport> StartAsync(Nbd.Exports.Qcow2Export export, string logPath, bool ownsInner = false,
        TimeProvider? time = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(export);
        ArgumentException.ThrowIfNullOrEmpty(logPath);
        time ??= TimeProvider.System;
        var image = export.Image;
        if (export.IsReadOnly) throw new ArgumentException($"cannot record export '{export.Name}': it is read-only, a recording needs a writable export");
        if (image.Info.Format != "qcow2")
            throw new ArgumentException($"cannot record '{image.Info.FileName}': it is a {image.Info.Format} image, which has no internal snapshot to start from (convert it to qcow2)");
        var fullLog = Path.GetFullPath(logPath);
        RefuseExisting(fullLog);

        var started = time.GetUtcNow();
        var snapshot = SnapshotName(started);
        await image.CreateSnapshotAsync(snapshot, cancellationToken).ConfigureAwait(false);
        CrashLogWriter log;
        try
        {
#pragma warning disable CA2000 // owned by the recording export returned below, which closes it
            log = CrashLogWriter.Create(fullLog, new CrashLogHeader(Path.GetFullPath(image.Info.FileName), snapshot, image.VirtualSize, started));
#pragma warning restore CA2000
        }
        catch
        {
            // No recording, so no base: the snapshot would only be clutter in the image.
            await image.DeleteSnapshotAsync(snapshot, CancellationToken.None).ConfigureAwait(false);
            throw;
        }
        return new RecordingExport(export, log, ownsInner) { BaseSnapshot = snapshot };
    }

    /// <summary>The base snapshot's name for a recording started at <paramref name="started"/>: <c>q2a-record-yyyyMMddTHHmmssZ</c> (UTC).</summary>
    public static string SnapshotName(DateTimeOffset started) =>
        "q2a-record-" + started.UtcDateTime.ToString("yyyyMMdd'T'HHmmss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Refuses, in one line naming it, a log path that exists: a recording is never overwritten.</summary>
    /// <exception cref="IOException"><paramref name="logPath"/> exists.</exception>
    public static void RefuseExisting(string logPath)
    {
        if (File.Exists(logPath) || Directory.Exists(logPath))
            throw new IOException($"recording log '{logPath}' exists: a recording is never overwritten, choose a new path");
    }

    /// <inheritdoc/>
    public string Name => _inner.Name;

    /// <inheritdoc/>
    public string? Description => _inner.Description;

    /// <inheritdoc/>
    public IReadOnlyList<KeyValuePair<string, object?>> MetricTags => _inner.MetricTags;

    /// <inheritdoc/>
    public string? Tenant => _inner.Tenant;

    /// <inheritdoc/>
    public long Size => _inner.Size;

    /// <inheritdoc/>
    public bool IsReadOnly => _inner.IsReadOnly;

    /// <inheritdoc/>
    public bool AllocationDepth => _inner.AllocationDepth;

    /// <inheritdoc/>
    public IReadOnlyList<string> DirtyBitmaps => _inner.DirtyBitmaps;

    /// <inheritdoc/>
    /// <remarks>Not recorded.</remarks>
    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        _inner.ReadAsync(offset, buffer, cancellationToken);

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken) =>
        WriteCoreAsync(offset, data, fua, inline: false, cancellationToken);

    /// <inheritdoc/>
    /// <remarks>
    /// Recorded as a write without FUA is; the inner export's <see cref="INbdExport.WriteInlineAsync"/> then runs it
    /// on the calling thread where it can, so a recorded server keeps the inline write path.
    /// </remarks>
    public ValueTask WriteInlineAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        WriteCoreAsync(offset, data, fua: false, inline: true, cancellationToken);

    private async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> data, bool fua, bool inline, CancellationToken cancellationToken)
    {
        long id;
        try
        {
            id = _log.BeginWrite(offset, data.Span, fua);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw LogFailed(ex);
        }
        try
        {
            if (inline) await _inner.WriteInlineAsync(offset, data, cancellationToken).ConfigureAwait(false);
            else await _inner.WriteAsync(offset, data, fua, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Failed(id);
            throw;
        }
        await CompletedAsync(id, durable: fua).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async ValueTask WriteZeroesAsync(long offset, long length, bool mayUnmap, bool fastZero, bool fua, CancellationToken cancellationToken)
    {
        long id;
        try
        {
            id = _log.BeginWriteZeroes(offset, length, mayUnmap, fua);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw LogFailed(ex);
        }
        try
        {
            await _inner.WriteZeroesAsync(offset, length, mayUnmap, fastZero, fua, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Failed(id);
            throw;
        }
        await CompletedAsync(id, durable: fua).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async ValueTask TrimAsync(long offset, long length, bool fua, CancellationToken cancellationToken)
    {
        long id;
        try
        {
            id = _log.BeginTrim(offset, length, fua);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw LogFailed(ex);
        }
        try
        {
            await _inner.TrimAsync(offset, length, fua, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Failed(id);
            throw;
        }
        await CompletedAsync(id, durable: fua).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        long id;
        try
        {
            id = _log.BeginFlush();
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw LogFailed(ex);
        }
        try
        {
            await _inner.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Failed(id);
            throw;
        }
        await CompletedAsync(id, durable: true).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    /// <remarks>Not recorded.</remarks>
    public ValueTask<IReadOnlyList<NbdExtent>> GetBlockStatusAsync(long offset, long length, CancellationToken cancellationToken) =>
        _inner.GetBlockStatusAsync(offset, length, cancellationToken);

    /// <inheritdoc/>
    /// <remarks>Not recorded.</remarks>
    public ValueTask<IReadOnlyList<NbdMetaExtent>> GetAllocationDepthAsync(long offset, long length, CancellationToken cancellationToken) =>
        _inner.GetAllocationDepthAsync(offset, length, cancellationToken);

    /// <inheritdoc/>
    /// <remarks>Not recorded.</remarks>
    public ValueTask<IReadOnlyList<NbdMetaExtent>> GetDirtyBitmapAsync(string bitmap, long offset, long length, CancellationToken cancellationToken) =>
        _inner.GetDirtyBitmapAsync(bitmap, offset, length, cancellationToken);

    /// <summary>The image finished the operation: its completion goes into the log, made durable for a FLUSH or FUA, before the reply.</summary>
    private async ValueTask CompletedAsync(long id, bool durable)
    {
        try
        {
            _log.Complete(id, ok: true);
            if (durable) await FlushLog(_log).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw LogFailed(ex);
        }
    }

    /// <summary>The image failed the operation (or it was cancelled): recorded as failed; the caller rethrows the image's error.</summary>
    private void Failed(long id)
    {
        try
        {
            _log.Complete(id, ok: false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The client gets the image's error, not the log's; a log that stopped working fails the next Begin in its own words.
        }
    }

    private NbdException LogFailed(Exception ex) =>
        ex as NbdException ?? new NbdException(NbdError.IoError, $"recording to '{LogPath}' failed: {ex.Message.ReplaceLineEndings(" ")}", ex);

    /// <summary>Closes the log cleanly (everything appended made durable), then the inner export when this one owns it. Call it once no request is in flight.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try
        {
            await _log.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            if (_ownsInner)
            {
                if (_inner is IAsyncDisposable asyncInner) await asyncInner.DisposeAsync().ConfigureAwait(false);
                else (_inner as IDisposable)?.Dispose();
            }
        }
    }
}
