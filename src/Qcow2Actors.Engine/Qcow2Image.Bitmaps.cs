using System.Runtime.CompilerServices;
using Akka.Actor;
using Qcow2Actors.Engine.Bitmaps;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine;

// Persistent dirty bitmaps: read from the image on read-only opens, tracked live on read-write ones.
public sealed partial class Qcow2Image
{
    // Read-only opens: the bitmaps as the image stores them (null for raw images), or why they could not be read.
    private BitmapSet? _storedBitmaps;
    private string? _bitmapsProblem;

    private BitmapSet? BitmapState => _ctx is not null ? _ctx.Bitmaps : _storedBitmaps;

    /// <summary>
    /// The image's persistent dirty bitmaps in directory order (empty for raw images and images
    /// without bitmaps). On a read-write open the enabled, consistent ones are tracked: every write,
    /// write-zeroes and discard sets their bits before it returns.
    /// </summary>
    /// <exception cref="Qcow2ImageCorruptException">The bitmap directory could not be read.</exception>
    public IReadOnlyList<Qcow2Bitmap> Bitmaps
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (_bitmapsProblem is { } problem) throw new Qcow2ImageCorruptException(problem);
            return BitmapState?.Describe() ?? [];
        }
    }

    /// <summary>
    /// The bits of bitmap <paramref name="name"/> over [<paramref name="offset"/>, <paramref name="offset"/> + <paramref name="length"/>)
    /// as maximal runs of set (dirty) or clear granules, in order, covering the range exactly. A tracked
    /// bitmap's runs include writes not yet stored in the image file.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No bitmap is called <paramref name="name"/> (the message names it).</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the disk.</exception>
    /// <exception cref="Qcow2ImageCorruptException">The bitmap's table or data is damaged.</exception>
    public async IAsyncEnumerable<BitmapExtent> GetBitmapExtentsAsync(string name, long offset, long length,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        ArgumentNullException.ThrowIfNull(name);
        CheckRange(offset, length);
        if (_bitmapsProblem is { } problem) throw new Qcow2ImageCorruptException(problem);
        var set = BitmapState ?? throw new KeyNotFoundException($"Dirty bitmap '{name}' not found");
        var bits = await set.GetBitsAsync(set.Find(name), cancellationToken).ConfigureAwait(false);
        foreach (var extent in bits.Extents(offset, length)) yield return extent;
    }

    /// <summary>
    /// Adds an empty persistent bitmap (stored before this returns). <paramref name="granularity"/>
    /// defaults as qemu-img's does: the cluster size, clamped to 4 KiB..64 KiB. An enabled bitmap is
    /// tracked from now on.
    /// </summary>
    /// <exception cref="InvalidOperationException">The name is taken or too long, the granularity is not a power of two of at least 512, the bitmap's data would pass QEMU's 512 MiB cap, the image is v2 (qemu-img's words), or cluster 0 has no room for the bitmaps extension.</exception>
    public ValueTask AddBitmapAsync(string name, long? granularity = null, bool enabled = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        long g = granularity ?? Math.Clamp((long)ClusterSize, 4096, 65536);
        int version = Header?.Version ?? 3;
        return EditBitmapsAsync(set =>
        {
            set.Add(name, g, enabled, version, _ctx!.Headers.BitmapsExtensionFits());
            return Task.CompletedTask;
        }, cancellationToken);
    }

    /// <summary>Removes bitmap <paramref name="name"/> and frees its clusters.</summary>
    /// <exception cref="KeyNotFoundException">No such bitmap (named).</exception>
    public ValueTask RemoveBitmapAsync(string name, CancellationToken cancellationToken = default) =>
        EditBitmapsAsync(set => { set.Remove(name); return Task.CompletedTask; }, cancellationToken);

    /// <summary>Clears every bit of bitmap <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such bitmap (named).</exception>
    /// <exception cref="InvalidOperationException">The bitmap is inconsistent.</exception>
    public ValueTask ClearBitmapAsync(string name, CancellationToken cancellationToken = default) =>
        EditBitmapsAsync(set => { set.Clear(name); return Task.CompletedTask; }, cancellationToken);

    /// <summary>Sets (tracks writes from now on) or clears bitmap <paramref name="name"/>'s auto flag.</summary>
    /// <exception cref="KeyNotFoundException">No such bitmap (named).</exception>
    /// <exception cref="InvalidOperationException">The bitmap is inconsistent.</exception>
    public ValueTask SetBitmapEnabledAsync(string name, bool enabled, CancellationToken cancellationToken = default) =>
        EditBitmapsAsync(set => set.SetEnabledAsync(name, enabled, cancellationToken), cancellationToken);

    /// <summary>
    /// Sets in bitmap <paramref name="target"/> every bit set in bitmap <paramref name="source"/> of
    /// <paramref name="sourceImage"/> (this image when null), whatever the two granularities.
    /// </summary>
    /// <exception cref="KeyNotFoundException">Either bitmap does not exist (named).</exception>
    /// <exception cref="InvalidOperationException">Either bitmap is inconsistent.</exception>
    public ValueTask MergeBitmapAsync(string target, string source, Qcow2Image? sourceImage = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(source);
        if (sourceImage is not null && sourceImage != this)
        {
            if (sourceImage._bitmapsProblem is { } problem) throw new Qcow2ImageCorruptException(problem);
            var from = sourceImage.BitmapState ?? throw new KeyNotFoundException($"Dirty bitmap '{source}' not found");
            return EditBitmapsAsync(async set =>
                await set.MergeAsync(target, await from.DirtyRunsAsync(source, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false),
                cancellationToken);
        }
        return EditBitmapsAsync(async set =>
            await set.MergeAsync(target, await set.DirtyRunsAsync(source, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false),
            cancellationToken);
    }

    // Every bitmap edit closes the request gate, as a snapshot edit does: a write sets its bits before
    // its data lands, so a clear (or a swap of a bitmap's bits) that ran while a write was inside could
    // drop the bit of data that lands after it. With the gate closed, each write in flight finishes
    // first (its bit then belongs to the state before the edit) and writes arriving meanwhile wait.
    private async ValueTask EditBitmapsAsync(Func<BitmapSet, Task> edit, CancellationToken cancellationToken)
    {
        Writer();
        var closure = await _gate.CloseAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            Writer();
        }
        catch
        {
            closure.Dispose();
            throw;
        }
        await AwaitActorAsync(Send(closure, done => new Write.BitmapEditRequest(edit, done)), closure, after: null, cancellationToken).ConfigureAwait(false);
    }

    // Read-only opens: the directory now, each bitmap's bits when first asked for.
    private async Task LoadStoredBitmapsAsync(Read.OpenedLayer opened, CancellationToken cancellationToken)
    {
        if (opened.HeaderBlock is not { } block || _qcow2 is null) return;
        try
        {
            _storedBitmaps = await BitmapSet.OpenAsync(_qcow2.File, block, track: false, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is Qcow2FormatException or Qcow2ImageCorruptException)
        {
            // The image itself reads fine: only asking for its bitmaps fails.
            _bitmapsProblem = $"'{Info.FileName}': its bitmap directory cannot be read: {ex.Message}";
        }
    }
}
