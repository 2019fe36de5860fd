namespace Qcow2Actors.Chaos.Devices;

/// <summary>
/// Which power-cut model <see cref="CrashSimulatingDevice.Crash"/> applies to the operations
/// (writes and length changes) issued since the last successful flush. Every mode keeps the
/// flushed image; they differ only in what survives of the rest.
/// </summary>
public enum CrashMode
{
    /// <summary>Every unsynced operation is lost: the disk holds exactly the flushed image.</summary>
    LoseUnsynced,

    /// <summary>Every completed operation survives, as when only the process died and the kernel's page cache was written back.</summary>
    KeepAll,

    /// <summary>A random prefix of the unsynced operations survives, as with an ordered write-back cache.</summary>
    KeepPrefix,

    /// <summary>A random subset survives, applied in issue order, as with a cache that writes back in any order.</summary>
    KeepSubset,

    /// <summary>A random prefix survives and the next write is torn: some of its 512-byte sectors are new, the rest old.</summary>
    TearLast,

    /// <summary>
    /// The harshest model a sector-atomic disk allows: every 512-byte sector independently holds
    /// any content it had since the flush (the flushed one or the one after any operation that
    /// touched it), and the length is the length after a random operation.
    /// </summary>
    TearAny,
}
