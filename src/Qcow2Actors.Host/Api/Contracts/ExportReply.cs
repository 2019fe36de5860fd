namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>An NBD export.</summary>
public sealed record ExportReply
{
    /// <summary>Export name clients select.</summary>
    public required string Name { get; init; }
    /// <summary>Tenant of the image.</summary>
    public required string Tenant { get; init; }
    /// <summary>Image served.</summary>
    public required string Image { get; init; }
    /// <summary>Served read-only.</summary>
    public bool ReadOnly { get; init; }
    /// <summary>The dirty bitmaps offered as <c>qemu:dirty-bitmap:NAME</c>.</summary>
    public IReadOnlyList<string> Bitmaps { get; init; } = [];
    /// <summary><c>qemu:allocation-depth</c> is offered.</summary>
    public bool AllocationDepth { get; init; }
    /// <summary>The crash-lab log the export records into (full path on the host); null when it is not recording.</summary>
    public string? Record { get; init; }
    /// <summary>The internal snapshot the recording started from; null when it is not recording.</summary>
    public string? RecordSnapshot { get; init; }
    /// <summary>The URI a client connects with (nbd://... or nbd+unix://...).</summary>
    public required string Uri { get; init; }
    /// <summary>Clients connected to this export now.</summary>
    public int Connections { get; init; }
    /// <summary>Ok or failed.</summary>
    public required ExportState State { get; init; }
    /// <summary>Why its image failed; null when ok.</summary>
    public string? Reason { get; init; }
}
