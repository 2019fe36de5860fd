namespace Qcow2Actors.CrashLab.States;

/// <summary>The fate of one volatile write in a crash state.</summary>
/// <param name="Operation">The write, zero or trim.</param>
/// <param name="Fate">Dropped, kept or torn.</param>
/// <param name="Sectors">Sectors (of the state space's sector size) the operation touches.</param>
/// <param name="KeptRanges">Guest byte ranges of the operation that reached the disk (all of it when kept, none
/// when dropped, the kept sectors' part when torn).</param>
public sealed record CrashWriteChoice(
    CrashLogOperation Operation,
    CrashWriteFate Fate,
    int Sectors,
    IReadOnlyList<(long Offset, long Length)> KeptRanges)
{
    /// <summary>How many of the operation's sectors reached the disk.</summary>
    public int SectorsKept { get; init; }
}
