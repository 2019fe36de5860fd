using Qcow2Actors.Nbd;
using Qcow2Actors.Nbd.Exports;

namespace Qcow2Actors.Host.Registry;

/// <summary>An NBD export of an image: what the NBD server serves under <see cref="Name"/>.</summary>
internal sealed class ExportEntry(string name, ImageEntry image, bool readOnly, Qcow2Export export, INbdExport served)
{
    public string Name { get; } = name;
    public ImageEntry Image { get; } = image;
    public bool ReadOnly { get; } = readOnly;

    /// <summary>The image's export (which does not own the image).</summary>
    public Qcow2Export Export { get; } = export;

    /// <summary>The export the NBD server holds (the image's export, wrapped by the throttle when there is one).</summary>
    public INbdExport Served { get; } = served;

    /// <summary>This export's own throttle; null: none.</summary>
    public LimitValues? Limit { get; set; }
}
