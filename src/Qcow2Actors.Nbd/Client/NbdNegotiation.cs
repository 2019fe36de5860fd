namespace Qcow2Actors.Nbd.Client;

/// <summary>What the handshake settled: the stream transmission runs on and the export's terms.</summary>
internal sealed record NbdNegotiation
{
    public required Stream Stream { get; init; }
    public required long Size { get; init; }
    public required ushort TransmissionFlags { get; init; }
    public required bool Structured { get; init; }
    /// <summary>Context name to the id the server gave it, for the contexts the server agreed to.</summary>
    public required IReadOnlyDictionary<string, uint> Contexts { get; init; }
    public uint MinimumBlockSize { get; init; } = 1;
    public uint MaximumPayload { get; init; } = NbdClient.DefaultMaximumPayload;
}
