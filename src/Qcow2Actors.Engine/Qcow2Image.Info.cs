namespace Qcow2Actors.Engine;

/// <summary>What an open image is: format, size, and the files and snapshots it refers to.</summary>
/// <param name="FileName">The path as given to open.</param>
/// <param name="Format">"qcow2" or "raw".</param>
/// <param name="VirtualSize">Guest size in bytes (the snapshot's when one was opened).</param>
/// <param name="ClusterSize">Cluster size in bytes; null for raw.</param>
/// <param name="BackingFile">The backing file name as stored in the header.</param>
/// <param name="BackingFormat">The backing format from the header extension, if any.</param>
/// <param name="DataFile">The external data file name as stored, if any.</param>
/// <param name="Snapshots">Internal snapshots in table order.</param>
/// <param name="OpenedSnapshot">Name of the snapshot being read, or null for the active image.</param>
public sealed record Qcow2ImageInfo(
    string FileName,
    string Format,
    long VirtualSize,
    int? ClusterSize,
    string? BackingFile,
    string? BackingFormat,
    string? DataFile,
    IReadOnlyList<Qcow2SnapshotInfo> Snapshots,
    string? OpenedSnapshot);

/// <summary>One internal snapshot: its unique id, its name, and the disk size it recorded (null in old v2 entries).</summary>
public sealed record Qcow2SnapshotInfo(string Id, string Name, long? DiskSize);
