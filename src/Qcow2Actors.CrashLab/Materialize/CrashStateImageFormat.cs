namespace Qcow2Actors.CrashLab.Materialize;

/// <summary>How a crash state is written out.</summary>
public enum CrashStateImageFormat
{
    /// <summary>A qcow2 overlay backed by the raw base file, holding only the sectors that differ.</summary>
    Overlay,
    /// <summary>A sparse raw file: the base's data plus the differing sectors.</summary>
    Raw,
    /// <summary>A qcow2 image without a backing file: the whole state in one file, for debugging one state.</summary>
    Standalone,
}
