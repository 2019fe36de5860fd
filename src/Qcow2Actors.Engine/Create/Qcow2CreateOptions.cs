using Qcow2Actors.Format;

namespace Qcow2Actors.Engine.Create;

/// <summary>How much of a new image to lay out up front (qemu-img's <c>preallocation=</c>).</summary>
public enum Preallocation
{
    /// <summary>Only the header, refcount structures and an empty L1 table.</summary>
    Off,
    /// <summary>Every L2 table and a data cluster for every guest cluster (the file stays sparse).</summary>
    Metadata,
}

/// <summary>
/// The options of <c>qemu-img create -f qcow2 -o ...</c>, with qemu-img's defaults:
/// v3, 64 KiB clusters, 16-bit refcounts, zlib.
/// </summary>
public sealed record Qcow2CreateOptions
{
    /// <summary>Virtual disk size in bytes.</summary>
    public required long Size { get; init; }
    /// <summary>Cluster size in bytes, a power of two from 512 B to 2 MiB.</summary>
    public int ClusterSize { get; init; } = 65536;
    /// <summary>Refcount width in bits: 1, 2, 4, 8, 16, 32 or 64 (v2 supports only 16).</summary>
    public int RefcountBits { get; init; } = 16;
    /// <summary>2 for compat=0.10, 3 for compat=1.1.</summary>
    public int Version { get; init; } = 3;
    /// <summary>128-bit L2 entries with 32 subclusters (needs clusters of at least 16 KiB).</summary>
    public bool ExtendedL2 { get; init; }
    /// <summary>Sets compatible bit 0 (lazy refcounts).</summary>
    public bool LazyRefcounts { get; init; }
    /// <summary>Compression type for compressed clusters.</summary>
    public CompressionType CompressionType { get; init; } = CompressionType.Zlib;
    /// <summary>Backing file name as stored in the image (relative names resolve against the image's directory).</summary>
    public string? BackingFile { get; init; }
    /// <summary>Backing file format ("qcow2", "raw"), stored in the backing format extension.</summary>
    public string? BackingFormat { get; init; }
    /// <summary>External data file name as stored in the image; the file is created (raw, sparse) if missing.</summary>
    public string? DataFile { get; init; }
    /// <summary>Sets autoclear bit 1: the data file is a valid raw image.</summary>
    public bool DataFileRaw { get; init; }
    /// <summary>Preallocation mode.</summary>
    public Preallocation Preallocation { get; init; } = Preallocation.Off;
}
