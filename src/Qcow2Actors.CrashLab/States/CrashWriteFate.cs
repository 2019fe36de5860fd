namespace Qcow2Actors.CrashLab.States;

/// <summary>What a crash state does with one volatile write.</summary>
public enum CrashWriteFate
{
    /// <summary>The write never reached the disk.</summary>
    Dropped,
    /// <summary>The write reached the disk whole.</summary>
    Kept,
    /// <summary>Some of the write's sectors reached the disk, the rest did not.</summary>
    Torn,
}
