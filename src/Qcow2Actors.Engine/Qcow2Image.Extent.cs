namespace Qcow2Actors.Engine;

/// <summary>
/// One run of <see cref="Qcow2Image.GetMapAsync"/>, with qemu-img map's meaning: <see cref="Depth"/> is
/// how far down the backing chain the content was decided (0 = this image); <see cref="Present"/>
/// that the layer at that depth allocates it; <see cref="Zero"/> that it reads as zeros;
/// <see cref="Data"/> that it is stored data; <see cref="Offset"/> the host offset in
/// <see cref="FileName"/> when the bytes are stored there uncompressed.
/// </summary>
public sealed record ImageExtent(long Start, long Length, int Depth, bool Present, bool Zero, bool Data, long? Offset, string? FileName)
{
    /// <summary>First byte after the run.</summary>
    public long End => Start + Length;
}
