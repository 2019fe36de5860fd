namespace Qcow2Actors.Nbd.Client;

/// <summary>One run of a block-status reply: its length and the context's flags (base:allocation: bit 0 HOLE, bit 1 ZERO).</summary>
/// <param name="Length">Bytes in the run; positive.</param>
/// <param name="Flags">The context's state bits for the run.</param>
public readonly record struct NbdExtent(long Length, uint Flags);
