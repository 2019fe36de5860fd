namespace Qcow2Actors.Nbd.Protocol;

/// <summary>One transmission request as the client framed it (the WRITE payload travels separately).</summary>
/// <param name="Flags">NBD_CMD_FLAG_* bits.</param>
/// <param name="Type">NBD_CMD_* type.</param>
/// <param name="Handle">The client's cookie, echoed in the reply.</param>
/// <param name="Offset">Byte offset into the export.</param>
/// <param name="Length">Bytes to read, write, zero, trim or describe.</param>
internal readonly record struct NbdRequest(ushort Flags, ushort Type, ulong Handle, ulong Offset, uint Length)
{
    /// <summary>True when every bit of <paramref name="flag"/> is set.</summary>
    public bool Has(ushort flag) => (Flags & flag) == flag;

    /// <summary>True when a flag outside <paramref name="allowed"/> is set.</summary>
    public bool HasFlagsBeyond(ushort allowed) => (Flags & ~allowed) != 0;

    /// <summary>Stopwatch timestamp of its dispatch when metrics time it (<see cref="Metrics.ExportMetrics.Start"/>), else 0.</summary>
    public long Started { get; init; }
}
