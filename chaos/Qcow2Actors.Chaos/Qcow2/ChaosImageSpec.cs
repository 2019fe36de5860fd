using System.Globalization;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Chaos.Qcow2;

/// <summary>What, if anything, sits under the image a chaos run writes.</summary>
public enum BackingKind
{
    /// <summary>No backing file: the guest starts as zeros.</summary>
    None,

    /// <summary>A raw backing file with data in places.</summary>
    Raw,

    /// <summary>A qcow2 backing file with data in places.</summary>
    Qcow2,
}

/// <summary>
/// The image a chaos run creates: format options drawn at random (cluster size, refcount width,
/// v2/v3, extended L2, a backing file and its size) plus the engine's checkpoint threshold, so
/// runs also crash in the middle of checkpoints. Everything derives from one seed.
/// </summary>
public sealed record ChaosImageSpec
{
    /// <summary>Guest size in bytes.</summary>
    public required long DiskSize { get; init; }

    /// <summary>Cluster size in bytes.</summary>
    public int ClusterSize { get; init; } = 65536;

    /// <summary>Refcount width (v2: 16 only).</summary>
    public int RefcountBits { get; init; } = 16;

    /// <summary>2 or 3.</summary>
    public int Version { get; init; } = 3;

    /// <summary>Extended L2 entries (v3, clusters of 16 KiB and more).</summary>
    public bool ExtendedL2 { get; init; }

    /// <summary>The backing file's format, or none.</summary>
    public BackingKind Backing { get; init; }

    /// <summary>The backing file's guest size (may be shorter than the disk: zeros past its end).</summary>
    public long BackingSize { get; init; }

    /// <summary>Seed of the backing file's content.</summary>
    public int BackingSeed { get; init; }

    /// <summary><c>qcow2actors.engine.checkpoint-records</c> for the writer: small values checkpoint mid-workload.</summary>
    public int CheckpointRecords { get; init; } = 65536;

    /// <summary>Draws a spec from <paramref name="random"/>.</summary>
    public static ChaosImageSpec Random(Random random, long diskSize)
    {
        ArgumentNullException.ThrowIfNull(random);
        int[] clusterSizes = [512, 4096, 16384, 65536, 65536, 262144, 2 * 1024 * 1024];
        var clusterSize = clusterSizes[random.Next(clusterSizes.Length)];
        // 512-byte clusters make a big disk slow to write; keep them for the smaller disks.
        if (clusterSize == 512 && diskSize > 16 * 1024 * 1024) clusterSize = 4096;
        var version = random.Next(4) == 0 ? 2 : 3;
        int[] widths = [1, 2, 4, 8, 16, 16, 32, 64];
        var refcountBits = version == 2 ? 16 : widths[random.Next(widths.Length)];
        var extendedL2 = version == 3 && clusterSize >= 16384 && random.Next(3) == 0;
        var backing = (BackingKind)random.Next(3);
        var backingSize = backing == BackingKind.None ? 0
            : random.Next(3) == 0 ? diskSize / 2 / 512 * 512 : diskSize;
        int[] checkpoints = [8, 64, 1024, 65536];
        return new ChaosImageSpec
        {
            DiskSize = diskSize,
            ClusterSize = clusterSize,
            RefcountBits = refcountBits,
            Version = version,
            ExtendedL2 = extendedL2,
            Backing = backing,
            BackingSize = backingSize,
            BackingSeed = random.Next(),
            CheckpointRecords = checkpoints[random.Next(checkpoints.Length)],
        };
    }

    /// <summary>
    /// The workload shape that fits this image. A discard over a v2 image with a backing file
    /// shows the backing file again (v2 has no zero flag), which is neither "unchanged" nor
    /// "zeros", so such runs issue no discards.
    /// </summary>
    public WorkloadOptions WorkloadOptions(int operations, int maxLength = 256 * 1024) => new()
    {
        DiskSize = DiskSize,
        Operations = operations,
        ClusterSize = Math.Max(512, ClusterSize),
        MaxLength = maxLength,
        DiscardWeight = Version == 2 && Backing != BackingKind.None ? 0 : 10,
    };

    /// <summary>HOCON for the engine that writes the image.</summary>
    public string EngineHocon(bool checkpointTimer = false) => string.Create(CultureInfo.InvariantCulture,
        $"qcow2actors.engine.checkpoint-records = {CheckpointRecords}\nqcow2actors.engine.checkpoint-interval = {(checkpointTimer ? "200ms" : "0s")}");

    /// <summary>The create options of the image itself (backing file named by <paramref name="backingPath"/>).</summary>
    public Qcow2CreateOptions CreateOptions(string? backingPath) => new()
    {
        Size = DiskSize,
        ClusterSize = ClusterSize,
        RefcountBits = RefcountBits,
        Version = Version,
        ExtendedL2 = ExtendedL2,
        BackingFile = Backing == BackingKind.None ? null : backingPath,
        BackingFormat = Backing switch
        {
            BackingKind.Raw => "raw",
            BackingKind.Qcow2 => "qcow2",
            _ => null,
        },
    };

    /// <summary>
    /// Creates the backing file (if any) at <paramref name="backingPath"/> and the image at
    /// <paramref name="imagePath"/>, closed and clean; returns the guest content the image starts
    /// with (the backing file's data, zeros past its end).
    /// </summary>
    public async Task<byte[]> CreateAsync(string imagePath, string backingPath, CancellationToken cancellationToken = default)
    {
        var initial = new byte[DiskSize];
        if (Backing != BackingKind.None)
        {
            var content = BackingContent();
            content.CopyTo(initial, 0);
            if (Backing == BackingKind.Raw)
            {
                await File.WriteAllBytesAsync(backingPath, content, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await using var host = ImageHost.Create(EngineHocon(), "chaos-backing");
                await using var backing = await host.CreateAsync(backingPath, new Qcow2CreateOptions { Size = BackingSize, ClusterSize = 65536 }, cancellationToken).ConfigureAwait(false);
                foreach (var (offset, length) in Extents(content))
                    await backing.WriteAsync(offset, content.AsMemory((int)offset, (int)length), cancellationToken: cancellationToken).ConfigureAwait(false);
            }
        }
        ImageCreator.Create(imagePath, CreateOptions(Backing == BackingKind.None ? null : Path.GetFullPath(backingPath)));
        return initial;
    }

    /// <summary>One line for the run report.</summary>
    public override string ToString()
    {
        var backing = Backing == BackingKind.None ? "" : $" backing={Backing.ToString().ToLowerInvariant()}:{Size(BackingSize)}";
        return string.Create(CultureInfo.InvariantCulture,
            $"v{Version} cluster={Size(ClusterSize)} refcount={RefcountBits}{(ExtendedL2 ? " extl2" : "")}{backing} ckpt={CheckpointRecords}");
    }

    private byte[] BackingContent()
    {
        // Data in about half of 64 KiB stretches, so some of the disk is backed and some is not.
        var content = new byte[BackingSize];
        var random = new Random(BackingSeed);
        for (long at = 0; at < content.Length; at += 65536)
        {
            if (random.Next(2) == 0) continue;
            random.NextBytes(content.AsSpan((int)at, (int)Math.Min(65536, content.Length - at)));
        }
        return content;
    }

    private static IEnumerable<(long Offset, long Length)> Extents(byte[] content)
    {
        for (long at = 0; at < content.Length; at += 65536)
        {
            var n = (int)Math.Min(65536, content.Length - at);
            if (content.AsSpan((int)at, n).IndexOfAnyExcept((byte)0) >= 0) yield return (at, n);
        }
    }

    private static string Size(long bytes) =>
        bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? $"{bytes >> 20}M"
        : bytes >= 1024 && bytes % 1024 == 0 ? $"{bytes >> 10}K"
        : bytes.ToString(CultureInfo.InvariantCulture);
}
