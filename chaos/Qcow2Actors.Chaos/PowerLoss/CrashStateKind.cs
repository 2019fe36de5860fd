namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>How a power-loss crash state treats the image-file calls issued since the last flush before the crash point.</summary>
public enum CrashStateKind
{
    /// <summary>Every call up to the crash point reached the disk, in order (the crash points walk every prefix).</summary>
    Prefix,

    /// <summary>A random subset reached the disk, in issue order (writes dropped).</summary>
    Subset,

    /// <summary>A random subset reached the disk with its writes in a random order (dropped and reordered).</summary>
    Reordered,

    /// <summary>A random subset, and one write torn at 512-byte sectors (some sectors new, the rest old).</summary>
    Torn512,

    /// <summary>A random subset, and one write torn at 4 KiB sectors.</summary>
    Torn4K,

    /// <summary>Every 512-byte sector of every write independently reached the disk or not.</summary>
    TornEverywhere512,

    /// <summary>Every 4 KiB sector of every write independently reached the disk or not.</summary>
    TornEverywhere4K,
}
