using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Snapshots;

/// <summary>
/// A snapshot edit of an open image, run by its <see cref="ImageActor"/> once every request has
/// drained, the image is checkpointed (as clean on disk as after a close) and its table actors are
/// stopped. The edit is the offline editor's (<see cref="SnapshotEditor"/>), on the device the image
/// already holds under its lock, with its crash-safe write order; around it the header carries the
/// dirty bit, so a crash at any point of the edit leaves an image whose next open (ours or QEMU's)
/// rebuilds refcounts and COPIED flags: what the edit may have left is leaks and stale COPIED flags,
/// never a lost reference, and the snapshot is there or not depending on whether its one header
/// write landed.
/// </summary>
internal static class OnlineSnapshotEdit
{
    /// <summary>Runs <paramref name="edit"/> between the dirty mark and the clean mark (blocking: an I/O thread).</summary>
    /// <exception cref="SnapshotEditException">Refused before anything was written; the header is clean again.</exception>
    public static object? Run(ImageContext ctx, Func<IBlockDevice, object?> edit)
    {
        ctx.Headers.MarkEditing();
        ctx.Device.Flush();
        object? result;
        try
        {
            result = edit(ctx.Device);
        }
        catch (SnapshotEditException)
        {
            // Refused before its first write: the file is as the checkpoint left it.
            ctx.MarkClean();
            ctx.Device.Flush();
            throw;
        }
        // The edit flushed its last write: the file is consistent, so the bit may go.
        ctx.Headers.Reload(ImageRecovery.ReadHeader(ctx.Device));
        ctx.MarkClean();
        ctx.Device.Flush();
        return result;
    }

    /// <summary>
    /// Loads what the engine keeps in memory from the edited file: the active L1 and size (a new
    /// view for readers), the metadata map, the refcounts and the snapshot list; cached L2 tables
    /// and the decompressed-cluster memo are dropped, as the tables they came from may have changed.
    /// </summary>
    public static async Task ReloadAsync(ImageContext ctx)
    {
        var block = ctx.HeaderBlock;
        var h = block.Header;
        var l1 = ReadL1(ctx.Device, h);
        var view = new ImageView(ctx.Geometry, h.Size, l1);
        ctx.Metadata.Clear();
        var snapshots = await MetadataMapBuilder.RegisterAsync(ctx.Metadata, ctx.Device, block, view, default).ConfigureAwait(false);
        ctx.Allocator!.Reload(new RefcountState(ctx.Device, h) { Map = ctx.Metadata });
        ctx.Layer.L2Tables.Clear();
        ctx.Layer.ForgetDecompressed();
        ctx.PublishView(view);
        ctx.Snapshots = snapshots;
    }

    private static ulong[] ReadL1(IBlockDevice device, Qcow2Header h)
    {
        if (h.L1Size == 0) return [];
        var bytes = new byte[(long)h.L1Size * L1Entry.Size];
        if (device.Read(bytes, h.L1TableOffset) < bytes.Length)
            throw new Qcow2ImageCorruptException($"active L1 table at 0x{h.L1TableOffset:X} lies past the end of {device.Name}");
        return L1Table.Decode(bytes);
    }
}
