using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Read;

/// <summary>The snapshot fields a reader needs to read a snapshot (FORMAT.md §8): which L1, and how large the disk was.</summary>
internal sealed record SnapshotRef(string Id, string Name, long L1TableOffset, int L1Size, long? DiskSize);

/// <summary>Loads the snapshot table without trusting its size: the buffer grows only as far as the entries really reach.</summary>
internal static class SnapshotDirectory
{
    public static async Task<List<SnapshotRef>> ReadAsync(Device.IBlockDevice file, long offset, int count, int version, CancellationToken cancellationToken)
    {
        long cap = Math.Min(SnapshotTable.MaxTableSize, file.Length - offset);
        long size = Math.Min(cap, 64 * 1024);
        while (true)
        {
            var buffer = new byte[size];
            int n = await file.ReadAsync(buffer, offset, cancellationToken).ConfigureAwait(false);
            try
            {
                return SnapshotTable.Read(buffer.AsSpan(0, n), count, version, offset, ValidationProfile.Open, out _)
                    .ConvertAll(e => new SnapshotRef(e.Id, e.Name, e.L1TableOffset, e.L1Size, e.DiskSize));
            }
            catch (Qcow2FormatException e) when (e.Rule == Qcow2Rule.SnapshotEntryTruncated && size < cap)
            {
                // An entry runs past what was read so far: read more, up to QEMU's table limit.
                size = Math.Min(cap, size * 4);
            }
            catch (Qcow2FormatException ex)
            {
                throw new Qcow2ImageCorruptException($"snapshot table of '{file.Name}' is damaged: {ex.Message}", ex);
            }
        }
    }
}
