namespace Qcow2Actors.Engine.Amend;

/// <summary>
/// What <see cref="ImageAmender"/> changes in a closed qcow2 image, as qemu-img amend's <c>-o</c>
/// options name it; a null property leaves that part of the image as it is.
/// </summary>
public sealed class AmendOptions
{
    /// <summary><c>compat</c>: 2 (0.10) or 3 (1.1).</summary>
    public int? Version { get; init; }

    /// <summary><c>refcount_bits</c>: the new refcount width (a power of two up to 64).</summary>
    public int? RefcountBits { get; init; }

    /// <summary><c>lazy_refcounts</c>: the compatible feature bit 0 (v3 only).</summary>
    public bool? LazyRefcounts { get; init; }

    /// <summary><c>data_file</c>: a new name for the external data file (only for images that have one).</summary>
    public string? DataFile { get; init; }

    /// <summary><c>data_file_raw</c>: may be cleared, never set on an existing image.</summary>
    public bool? DataFileRaw { get; init; }
}
