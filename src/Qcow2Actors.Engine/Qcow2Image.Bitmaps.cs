using System.Runtime.CompilerServices;
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
