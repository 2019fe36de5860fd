using Qcow2Actors.Engine.Snapshots;

namespace Qcow2Actors.Engine;

// What qemu-img rebase and commit need of an image open for writing: a new backing file name
// in the header, and an image emptied so that it reads from its backing file again.
public sealed partial class Qcow2Image
{
    /// <summary>
    /// Points the image at another backing file, or at none (<paramref name="backingFile"/> null),
    /// as <c>qemu-img rebase</c>'s last step: the image is checkpointed first (requests meanwhile
    /// wait, none fails), then cluster 0 is rewritten in one write and flushed, so a crash leaves
    /// either the old name or the new one. Only the name changes: this open image keeps reading
    /// through the chain it was opened with; reopen it to read through the new one.
    /// </summary>
    /// <param name="backingFile">The name to store (relative names are relative to the image's directory), or null.</param>
    /// <param name="backingFormat">The backing file's format ("qcow2", "raw"), stored with the name; ignored without a name.</param>
    /// <param name="cancellationToken">Stops waiting for the requests in flight; once the write has started it runs to the end.</param>
    /// <exception cref="SnapshotEditException">Refused, nothing written: open read-only, or the name does not fit in cluster 0.</exception>
    /// <exception cref="IOException">The image turned read-only after a failure.</exception>
    public async ValueTask ChangeBackingFileAsync(string? backingFile, string? backingFormat, CancellationToken cancellationToken = default)
    {
        var ctx = EditTarget($"change the backing file to '{backingFile ?? ""}'");
        await EditOnlineAsync(device =>
        {
            try
            {
                ctx.Headers.ChangeBacking(backingFile, backingFormat);
            }
            catch (InvalidOperationException ex)
            {
                throw new SnapshotEditException($"Could not change the backing file to '{backingFile}': {ex.Message}", SnapshotEditException.RefusedCode);
            }
            device.Flush();
            return null;
        }, changesImage: false, cancellationToken).ConfigureAwait(false);
        _info = _info with { BackingFile = backingFile, BackingFormat = backingFile is null ? null : backingFormat };
    }

    /// <summary>
    /// Makes every cluster of the active disk unallocated, so the whole disk reads from the backing
    /// file again (zeros without one), as <c>qemu-img commit</c> empties the top image once its
    /// clusters are in the backing file. Internal snapshots keep their clusters. Durable once flushed.
    /// </summary>
    /// <exception cref="NotSupportedException">The image has an external data file (its clusters would read as zeros, not from the backing file).</exception>
    public async ValueTask MakeEmptyAsync(CancellationToken cancellationToken = default)
    {
        var ctx = Writer();
        if (ctx.Geometry.ExternalDataFile)
            throw new NotSupportedException($"'{Info.FileName}' has an external data file: emptying it is not supported");
        var admitted = await EnterAsync(cancellationToken).ConfigureAwait(false);
        if (VirtualSize == 0)
        {
            admitted.Dispose();
            return;
        }
        await PerTableAsync(admitted, 0, VirtualSize, (o, l, done) => new Write.DiscardOp(o, l, done, Deallocate: true), false, null, cancellationToken).ConfigureAwait(false);
    }
}
