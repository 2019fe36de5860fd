using Qcow2Actors.CrashLab;
using Qcow2Actors.Nbd.Exports;
using Qcow2Actors.Nbd.Throttling;

namespace Qcow2Actors.Host.Registry;

/// <summary>An NBD export of an image: what the NBD server serves under <see cref="Name"/>.</summary>
internal sealed class ExportEntry(string name, ImageEntry image, bool readOnly, Qcow2Export export, ThrottledExport served,
    RecordingExport? recording = null)
{
    public string Name { get; } = name;
    public ImageEntry Image { get; } = image;
    public bool ReadOnly { get; } = readOnly;

    /// <summary>The image's export (which does not own the image).</summary>
    public Qcow2Export Export { get; } = export;

    /// <summary>The recorder between the throttle and <see cref="Export"/> (it owns the log, not the export); null: not recording.</summary>
    public RecordingExport? Recording { get; } = recording;

    /// <summary>The export the NBD server holds (the image's export, wrapped by the throttle when there is one).</summary>
    public ThrottledExport Served { get; } = served;

    /// <summary>The group <see cref="Limit"/> runs as; null while there is no limit.</summary>
    public ThrottleGroup? Group { get; set; }

    /// <summary>This export's own throttle; null: none.</summary>
    public LimitValues? Limit { get; set; }
}
