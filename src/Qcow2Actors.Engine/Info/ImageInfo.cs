using System.Runtime.InteropServices;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Info;

/// <summary>What <c>qemu-img info</c> reports about one qcow2 image.</summary>
public sealed record ImageInfo
{
    /// <summary>File name as given (or, in a backing chain, as resolved from the overlay).</summary>
    public required string Filename { get; init; }
    /// <summary>Guest-visible size in bytes.</summary>
    public required long VirtualSize { get; init; }
    /// <summary>Bytes of storage the host file occupies (stat blocks × 512).</summary>
    public required long ActualSize { get; init; }
    /// <summary>
    /// False for an image on a device that is not a host file (an NBD export): its storage use is
    /// unknown, <see cref="ActualSize"/> is 0, and qemu-img's "actual-size" is left out.
    /// </summary>
    public bool ActualSizeAvailable { get; init; } = true;
    /// <summary>Cluster size in bytes.</summary>
    public required long ClusterSize { get; init; }
    /// <summary>Incompatible bit 0: refcounts may be stale.</summary>
    public required bool DirtyFlag { get; init; }
    /// <summary>Header version: 2 (compat 0.10) or 3 (compat 1.1).</summary>
    public required int Version { get; init; }
    /// <summary>"zlib" or "zstd".</summary>
    public required string CompressionType { get; init; }
    /// <summary>Compatible bit 0.</summary>
    public required bool LazyRefcounts { get; init; }
    /// <summary>Refcount width in bits.</summary>
    public required int RefcountBits { get; init; }
    /// <summary>Incompatible bit 1.</summary>
    public required bool Corrupt { get; init; }
    /// <summary>Incompatible bit 4.</summary>
    public required bool ExtendedL2 { get; init; }
    /// <summary>External data file name when incompatible bit 2 is set.</summary>
    public string? DataFile { get; init; }
    /// <summary>True when the image has an external data file.</summary>
    public bool HasDataFile { get; init; }
    /// <summary>Autoclear bit 1: the data file is a valid raw image.</summary>
    public bool DataFileRaw { get; init; }
    /// <summary>Backing file name as stored in the image.</summary>
    public string? BackingFilename { get; init; }
    /// <summary>Backing file name resolved relative to the image's directory.</summary>
    public string? FullBackingFilename { get; init; }
    /// <summary>Backing format from the header extension.</summary>
    public string? BackingFormat { get; init; }
    /// <summary>Internal snapshots, in table order.</summary>
    public IReadOnlyList<SnapshotInfo> Snapshots { get; init; } = [];
    /// <summary>Persistent dirty bitmaps (only when the bitmaps extension is consistent).</summary>
    public IReadOnlyList<BitmapInfo> Bitmaps { get; init; } = [];
    /// <summary>
    /// A crash left journal records pending (our incompatible bit 63): everything else here shows
    /// the image as <c>q2a recover</c> will leave it, replayed in memory.
    /// </summary>
    public bool JournalPending { get; init; }

    /// <summary>
    /// Reads the image at <paramref name="path"/>, and with <paramref name="backingChain"/> every
    /// image below it. Each file is opened read-only and checked against the opener rules.
    /// </summary>
    /// <exception cref="Qcow2FormatException">An image is not one a qcow2 opener may accept.</exception>
    /// <exception cref="ImageLockException">Without <paramref name="forceShare"/>: another process is writing an image of the chain.</exception>
    public static IReadOnlyList<ImageInfo> ReadChain(string path, bool backingChain, bool forceShare = false)
    {
        // qemu-img info's claim: the shared read lock on each image while it is read (with -U, nothing but "consistent read").
        using var locks = new ImageLockSet();
        var mode = forceShare ? LockMode.ForceShareReader : LockMode.Reader;
        var chain = new List<ImageInfo>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (string? current = path; current is not null;)
        {
            if (!seen.Add(Path.GetFullPath(current)))
                throw new InvalidOperationException($"Backing file '{current}' creates an infinite loop");
            locks.Acquire(current, mode);
            using var device = PendingJournal.OpenRecovered(current, out bool pending);
            var info = Read(device, current) with { JournalPending = pending };
            chain.Add(info);
            if (!backingChain) break;
            if (info.FullBackingFilename is not null && info.BackingFormat is not null and not "qcow2")
                throw new NotSupportedException($"Could not open backing file '{info.FullBackingFilename}': only qcow2 backing files are supported, not '{info.BackingFormat}'");
            current = info.FullBackingFilename;
        }
        return chain;
    }

    /// <summary>Reads the header, snapshots and bitmaps of the image on <paramref name="device"/>.</summary>
    /// <exception cref="Qcow2FormatException">The image is not one a qcow2 opener may accept.</exception>
    public static ImageInfo Read(IBlockDevice device, string filename) =>
        Read(device, filename, hostFile: true);

    /// <summary>
    /// Reads the header, snapshots and bitmaps of the qcow2 image on <paramref name="device"/>, a device
    /// that is not a host file (an NBD export), named by its <see cref="IBlockDevice.Name"/>. Nothing on
    /// the host is looked at: <see cref="ActualSizeAvailable"/> is false, as qemu-img says "disk size:
    /// unavailable" for such an image, and a relative backing name has no <see cref="FullBackingFilename"/>.
    /// </summary>
    /// <exception cref="Qcow2FormatException">The image is not one a qcow2 opener may accept.</exception>
    public static ImageInfo ReadOnDevice(IBlockDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return Read(device, device.Name, hostFile: false);
    }

    private static ImageInfo Read(IBlockDevice device, string filename, bool hostFile)
    {
        var m = ImageMetadata.Load(device, ValidationProfile.Info);
        var h = m.Header;
        IReadOnlyList<BitmapDirectoryEntry> bitmaps;
        try
        {
            bitmaps = ImageMetadata.ReadBitmaps(device, m, ValidationProfile.Info);
        }
        catch (Qcow2FormatException e)
        {
            throw QemuImgWording.Reword(e);
        }
        var backing = m.Block.BackingFileName;
        return new ImageInfo
        {
            Filename = filename,
            VirtualSize = h.Size,
            ActualSize = hostFile ? AllocatedBytes(filename, device.Length) : 0,
            ActualSizeAvailable = hostFile,
            ClusterSize = m.ClusterSize,
            DirtyFlag = h.IsDirty,
            Version = h.Version,
            CompressionType = h.CompressionType == Format.CompressionType.Zstd ? "zstd" : "zlib",
            LazyRefcounts = h.HasLazyRefcounts,
            RefcountBits = h.RefcountBits,
            Corrupt = h.IsCorrupt,
            ExtendedL2 = h.HasExtendedL2,
            HasDataFile = h.HasExternalDataFile,
            DataFile = m.Block.DataFile,
            DataFileRaw = (h.AutoclearFeatures & AutoclearFeatures.RawExternalData) != 0,
            BackingFilename = backing,
            FullBackingFilename = backing is null ? null
                : hostFile || backing.StartsWith('/') ? ResolveBacking(filename, backing) : null,
            BackingFormat = backing is null ? null : m.Block.BackingFormat,
            Snapshots = [.. m.Snapshots.Select(SnapshotInfo.From)],
            Bitmaps = [.. bitmaps.Select(BitmapInfo.From)],
        };
    }

    /// <summary>Like QEMU's path_combine: a relative backing name is relative to the overlay's directory.</summary>
    private static string ResolveBacking(string image, string backing)
    {
        if (backing.StartsWith('/') || backing.Contains(':', StringComparison.Ordinal)) return backing;
        var slash = image.LastIndexOf('/');
        return slash < 0 ? backing : image[..(slash + 1)] + backing;
    }

    /// <summary>The JSON object <c>qemu-img info --output=json</c> prints for this image.</summary>
    public QemuJsonObject ToQemuJson()
    {
        var o = new QemuJsonObject();
        if (Snapshots.Count > 0)
        {
            o.Add("snapshots", Snapshots.Select(s =>
            {
                var j = new QemuJsonObject();
                if (s.Icount != -1) j.Add("icount", s.Icount);
                return j.Add("vm-clock-nsec", (long)(s.VmClockNanoseconds % 1_000_000_000))
                    .Add("name", s.Name).Add("date-sec", (long)s.DateSeconds).Add("date-nsec", (long)s.DateNanoseconds)
                    .Add("vm-clock-sec", (long)(s.VmClockNanoseconds / 1_000_000_000)).Add("id", s.Id)
                    .Add("vm-state-size", (long)s.VmStateSize);
            }).ToList());
        }
        o.Add("virtual-size", VirtualSize).Add("filename", Filename).Add("cluster-size", ClusterSize)
            .Add("format", "qcow2");
        if (ActualSizeAvailable) o.Add("actual-size", ActualSize);
        o.Add("format-specific", new QemuJsonObject().Add("type", "qcow2").Add("data", FormatSpecific()));
        if (BackingFilename is not null)
        {
            if (FullBackingFilename is not null) o.Add("full-backing-filename", FullBackingFilename);
            o.Add("backing-filename", BackingFilename);
            if (BackingFormat is not null) o.Add("backing-filename-format", BackingFormat);
        }
        o.Add("dirty-flag", DirtyFlag);
        return o;
    }

    /// <summary>The "format-specific" data member, as qcow2's driver fills it in QEMU.</summary>
    public QemuJsonObject FormatSpecific()
    {
        var d = new QemuJsonObject();
        if (Version == 2)
        {
            d.Add("compat", "0.10").Add("compression-type", CompressionType).Add("refcount-bits", (long)RefcountBits);
            return JournalPending ? d.Add("journal-pending", true) : d;
        }
        d.Add("compat", "1.1").Add("compression-type", CompressionType).Add("lazy-refcounts", LazyRefcounts);
        if (Bitmaps.Count > 0)
        {
            d.Add("bitmaps", Bitmaps.Select(b =>
            {
                var flags = new List<object>();
                if ((b.Flags & 1) != 0) flags.Add("in-use");
                if ((b.Flags & 2) != 0) flags.Add("auto");
                return new QemuJsonObject().Add("flags", flags).Add("name", b.Name).Add("granularity", b.Granularity);
            }).ToList());
        }
        d.Add("refcount-bits", (long)RefcountBits);
        if (DataFile is not null) d.Add("data-file", DataFile);
        if (HasDataFile) d.Add("data-file-raw", DataFileRaw);
        // Only ours: a clean image's data stays byte-identical to qemu-img's.
        if (JournalPending) d.Add("journal-pending", true);
        return d.Add("corrupt", Corrupt).Add("extended-l2", ExtendedL2);
    }

    private static long AllocatedBytes(string path, long fallback)
    {
        // st_blocks sits at byte 64 of struct stat on both x86-64 and arm64 glibc; elsewhere use the length.
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64))
            return fallback;
        var buffer = new byte[256];
        return NativeStat.Stat(path, buffer) == 0 ? BitConverter.ToInt64(buffer, 64) * 512 : fallback;
    }
}

internal static partial class NativeStat
{
    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Stat(string path, [Out] byte[] buffer);
}
