namespace Qcow2Actors.Nbd.Exports;

// qemu:dirty-bitmap:NAME over the engine's persistent bitmaps.
public sealed partial class Qcow2Export
{
    /// <summary>The names, checked as qemu-nbd checks <c>-B</c>: each present in the image and consistent.</summary>
    private IReadOnlyList<string> CheckBitmaps(IReadOnlyList<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        var checkedNames = new List<string>(names.Count);
        foreach (var name in names)
        {
            var bitmap = _image.Bitmaps.FirstOrDefault(b => string.Equals(b.Name, name, StringComparison.Ordinal))
                ?? throw new ArgumentException($"Bitmap '{name}' is not found");
            if (bitmap.Inconsistent)
                throw new ArgumentException($"Bitmap '{name}' is inconsistent and cannot be used (try qemu-img bitmap --remove to delete it)");
            if (!checkedNames.Contains(name)) checkedNames.Add(name);
        }
        return checkedNames;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// From <see cref="Engine.Qcow2Image.GetBitmapExtentsAsync"/>: bits set where the bitmap says dirty,
    /// including writes this open made and has not stored yet.
    /// </remarks>
    public async ValueTask<IReadOnlyList<NbdMetaExtent>> GetDirtyBitmapAsync(string bitmap, long offset, long length, CancellationToken cancellationToken)
    {
        if (!_dirtyBitmaps.Contains(bitmap)) throw new NbdException(NbdError.InvalidArgument, $"export '{Name}' does not export bitmap '{bitmap}'");
        length = Math.Min(length, Size - offset);
        var extents = new List<NbdMetaExtent>();
        try
        {
            await foreach (var e in _image.GetBitmapExtentsAsync(bitmap, offset, length, cancellationToken).ConfigureAwait(false))
            {
                var flags = e.Dirty ? NbdMetaExtent.Dirty : 0;
                if (extents.Count > 0 && extents[^1].Flags == flags)
                {
                    extents[^1] = extents[^1] with { Length = extents[^1].Length + e.Length };
                    continue;
                }
                // Enough for one reply: the client asks again from where this one ends.
                if (extents.Count == MaxExtentsPerReply) break;
                extents.Add(new NbdMetaExtent(e.Length, flags));
            }
        }
        catch (Exception ex) when (Translate(ex) is { } mapped)
        {
            throw mapped;
        }
        return extents;
    }
}
