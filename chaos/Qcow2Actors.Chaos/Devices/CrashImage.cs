namespace Qcow2Actors.Chaos.Devices;

/// <summary>
/// The bytes a disk could hold after a simulated power cut, with a one-line account of how
/// they were chosen so a failing crash state can be reproduced and explained.
/// </summary>
public sealed class CrashImage
{
    internal CrashImage(byte[] content, CrashMode mode, string description)
    {
        Content = content;
        Mode = mode;
        Description = description;
    }

    /// <summary>The whole device content after the crash; its length is the device length.</summary>
    public byte[] Content { get; }

    /// <summary>The model that produced it.</summary>
    public CrashMode Mode { get; }

    /// <summary>Which operations survived and which were torn, e.g. "KeepSubset: kept ops #4,#6 of #3..#9".</summary>
    public string Description { get; }

    /// <summary>Writes the content to <paramref name="path"/> (created or replaced), for qemu-img or a reopen from disk.</summary>
    public void WriteTo(string path) => File.WriteAllBytes(path, Content);

    /// <summary>
    /// A fresh crash-simulating device holding this content as its flushed image, so recovery
    /// can run on it and be crashed in turn (a crash during recovery).
    /// </summary>
    public CrashSimulatingDevice Reboot(string? name = null) => new(Content, name ?? "crashed");

    /// <inheritdoc />
    public override string ToString() => Description;
}
