using System.Buffers.Binary;
using System.Text;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// The few snapshot table fields a reader needs to read a snapshot (FORMAT.md §8): which L1
/// and how large the disk was. Parsed with every length bounded by the table QEMU accepts.
/// </summary>
internal sealed record SnapshotRef(string Id, string Name, long L1TableOffset, int L1Size, long? DiskSize);

internal static class SnapshotDirectory
{
    private const int FixedSize = 40;
    private const int MaxExtraData = 1024;
    private const long MaxTableBytes = 64L * 1024 * 1024;

    public static async Task<List<SnapshotRef>> ReadAsync(Device.IBlockDevice file, long offset, int count, CancellationToken cancellationToken)
    {
        var list = new List<SnapshotRef>(Math.Min(count, 1024));
        long pos = offset;
        var fixedPart = new byte[FixedSize];
        for (int i = 0; i < count; i++)
        {
            if (pos - offset > MaxTableBytes)
                throw new Qcow2ImageCorruptException($"snapshot table at 0x{offset:X} exceeds {MaxTableBytes} bytes");
            if (await file.ReadAsync(fixedPart, pos, cancellationToken).ConfigureAwait(false) < FixedSize)
                throw new Qcow2ImageCorruptException($"snapshot {i} at 0x{pos:X} lies past the end of {file.Name}");
            long l1Offset = (long)BinaryPrimitives.ReadUInt64BigEndian(fixedPart);
            uint l1Size = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(8));
            int idLength = BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(12));
            int nameLength = BinaryPrimitives.ReadUInt16BigEndian(fixedPart.AsSpan(14));
            uint extraSize = BinaryPrimitives.ReadUInt32BigEndian(fixedPart.AsSpan(36));
            if (extraSize > MaxExtraData)
                throw new Qcow2ImageCorruptException($"snapshot {i} at 0x{pos:X}: extra_data_size {extraSize} exceeds {MaxExtraData}");
            var rest = new byte[extraSize + idLength + nameLength];
            if (await file.ReadAsync(rest, pos + FixedSize, cancellationToken).ConfigureAwait(false) < rest.Length)
                throw new Qcow2ImageCorruptException($"snapshot {i} at 0x{pos:X} lies past the end of {file.Name}");
            long? diskSize = extraSize >= 16 ? (long)BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(8)) : null;
            string id = Encoding.UTF8.GetString(rest, (int)extraSize, idLength);
            string name = Encoding.UTF8.GetString(rest, (int)extraSize + idLength, nameLength);
            if (l1Size > 32 * 1024 * 1024 / 8)
                throw new Qcow2ImageCorruptException($"snapshot '{name}' (id {id}): l1_size {l1Size} exceeds QEMU's limit");
            list.Add(new SnapshotRef(id, name, l1Offset, (int)l1Size, diskSize));
            pos += (FixedSize + rest.Length + 7) & ~7;
        }
        return list;
    }
}
