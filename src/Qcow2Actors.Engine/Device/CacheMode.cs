namespace Qcow2Actors.Engine.Device;

/// <summary>How an image's files use the host page cache, as QEMU's <c>cache=</c> option (qemu-nbd <c>--cache</c>).</summary>
public enum CacheMode
{
    /// <summary>
    /// Through the page cache (the default): writes complete once in host memory and become durable
    /// at the next flush (fdatasync).
    /// </summary>
    Writeback,

    /// <summary>
    /// Around the page cache (O_DIRECT): reads and writes go to the disk, in units of its logical
    /// sector, without filling host memory; a flush still fdatasyncs, for the disk's own cache and
    /// the file's metadata. Needs a filesystem that supports O_DIRECT (not every tmpfs does).
    /// </summary>
    None,
}
