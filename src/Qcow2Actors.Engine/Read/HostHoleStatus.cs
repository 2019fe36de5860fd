using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Read;

/// <summary>
/// QEMU's answer for data clusters whose host range the file system never stored: when an image looks
/// metadata-preallocated (its file holds noticeably fewer blocks than its refcounts reference, as after
/// <c>preallocation=metadata</c> or a write that zeroed a new cluster's tail by punching), block status
/// asks the host file for holes inside each data run, and a hole reads as zeros: the run is split
/// there and its hole part reported zero (still data, still at its host offset). Whether the image
/// looks so is decided once, on the first block status (as QEMU does per open). Images whose file is
/// not at least a tenth holes cost one statx and nothing more.
/// </summary>
internal sealed class HostHoleStatus
{
    private const long Sector = 512;
    private readonly IBlockDevice _imageFile;
    private readonly IHostFileLayout? _imageLayout;
    private readonly IHostFileLayout? _dataLayout;
    private readonly long _refcountTableOffset;
    private readonly long _refcountTableEntries;
    private readonly int _refcountOrder;
    private readonly int _clusterBits;
    // 0: not decided yet; 1: not metadata-preallocated; 2: metadata-preallocated.
    private int _detected;

    /// <param name="imageFile">The qcow2 file, whose refcounts and allocation decide.</param>
    /// <param name="dataFile">Where data clusters live (the image file, or the external data file).</param>
    /// <param name="header">The header as opened (the refcount table's place and the widths).</param>
    public HostHoleStatus(IBlockDevice imageFile, IBlockDevice dataFile, Qcow2Header header)
    {
        _imageFile = imageFile;
        _imageLayout = HostFileHoles.Of(imageFile);
        _dataLayout = HostFileHoles.Of(dataFile);
        _refcountTableOffset = header.RefcountTableOffset;
        _refcountTableEntries = header.RefcountTableEntries;
        _refcountOrder = header.RefcountOrder;
        _clusterBits = header.ClusterBits;
    }

    /// <summary>
    /// <paramref name="status"/> (a data run with its host offset) limited to the first data or hole run
    /// of its host range, zero when that is a hole; unchanged when the image does not look
    /// metadata-preallocated or the file system cannot say.
    /// </summary>
    public LayerStatus Refine(LayerStatus status)
    {
        if (_dataLayout is null || _imageLayout is null) return status;
        int detected = Volatile.Read(ref _detected);
        if (detected == 0)
        {
            // Racing first callers may both walk; the answer is the same and the walk read-only.
            detected = Detect() ? 2 : 1;
            Volatile.Write(ref _detected, detected);
        }
        if (detected != 2) return status;
        HostFileRun? run;
        try
        {
            run = _dataLayout.GetRun(status.HostOffset, status.Length);
        }
        catch (IOException)
        {
            return status; // extra information only, as in QEMU: a failed query changes nothing
        }
        if (run is not { } r) return status;
        // Past the end of the file, or a hole up to it: the whole run reads as zeros.
        if (r.EndOfFile && (r.Length == 0 || r.Hole)) return status with { Zero = true };
        return status with { Length = r.Length, Zero = r.Hole };
    }

    // qemu's qcow2_detect_metadata_preallocation: clusters with a nonzero refcount (counted up to the
    // end of the file) reach max(allocated clusters × 10/9, allocated clusters + 2).
    private bool Detect()
    {
        try
        {
            long allocated = _imageLayout!.AllocatedBytes;
            if (allocated < 0) return false;
            long realClusters = allocated >> _clusterBits;
            long threshold = Math.Max(realClusters * 10 / 9, realClusters + 2);
            long fileLength = (_imageFile.Length + Sector - 1) & ~(Sector - 1);
            long clusterSize = 1L << _clusterBits;
            long endCluster = (fileLength + clusterSize - 1) >> _clusterBits;
            // The walk cannot reach the threshold: a file at least nine tenths stored (every ordinary image) stops here.
            if (endCluster < threshold) return false;
            return CountReferenced(endCluster, threshold) >= threshold;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private long CountReferenced(long endCluster, long threshold)
    {
        int perBlockBits = _clusterBits + 3 - _refcountOrder;
        long clusterSize = 1L << _clusterBits;
        long tables = Math.Min(_refcountTableEntries, ((endCluster - 1) >> perBlockBits) + 1);
        var table = new byte[tables * RefcountTableEntry.Size];
        ImageMetadataRead(table, _refcountTableOffset);
        var block = new byte[clusterSize];
        long count = 0;
        for (long t = 0; t < tables && count < threshold; t++)
        {
            var entry = RefcountTableEntry.Read(table, t);
            if (entry.IsUnallocated) continue;
            // An unaligned block is an error to QEMU's walk, which then answers "not preallocated".
            if ((entry.BlockOffset & (clusterSize - 1)) != 0) return 0;
            ImageMetadataRead(block, entry.BlockOffset);
            long first = t << perBlockBits;
            long n = Math.Min(1L << perBlockBits, endCluster - first);
            for (long i = 0; i < n && count < threshold; i++)
                if (RefcountBlock.Get(block, i, _refcountOrder) != 0) count++;
        }
        return count;
    }

    // Bytes past the end of the file read as zeros.
    private void ImageMetadataRead(Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = _imageFile.Read(buffer[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        buffer[total..].Clear();
    }
}
