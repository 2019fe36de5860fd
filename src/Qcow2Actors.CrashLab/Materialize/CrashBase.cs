using Microsoft.Win32.SafeHandles;
using Qcow2Actors.Engine;

namespace Qcow2Actors.CrashLab.Materialize;

/// <summary>
/// The recording's base as a sparse raw file: the contents of the header's snapshot, read once from the image
/// (read-only and shared, so the image may still be served), every crash state is built over it.
/// </summary>
public sealed class CrashBase : IDisposable
{
    private const int CopyChunk = 1 << 20;
    private readonly SafeFileHandle _handle;

    private CrashBase(string path, long size, IReadOnlyList<(long Offset, long Length)> dataExtents)
    {
        Path = path;
        Size = size;
        DataExtents = dataExtents;
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
    }

    /// <summary>The raw base file.</summary>
    public string Path { get; }

    /// <summary>Its size: the recording's virtual size.</summary>
    public long Size { get; }

    /// <summary>Ranges of the base that may hold non-zero data; the rest reads as zeros.</summary>
    public IReadOnlyList<(long Offset, long Length)> DataExtents { get; }

    /// <summary>Reads the snapshot named in <paramref name="header"/> from its image into <paramref name="path"/>.</summary>
    /// <exception cref="CrashLabException">The image is missing or unreadable, or has no such snapshot.</exception>
    public static async Task<CrashBase> ExtractAsync(ImageHost host, CrashLogHeader header, string path, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(header);
        if (!File.Exists(header.ImagePath))
            throw new CrashLabException($"recorded image {header.ImagePath} does not exist (named in the crash log header).");
        Qcow2Image image;
        try
        {
            image = await host.OpenAsync(header.ImagePath,
                new Qcow2OpenOptions { ReadOnly = true, ForceShare = true, Snapshot = header.BaseSnapshot }, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new CrashLabException($"cannot read snapshot '{header.BaseSnapshot}' of {header.ImagePath}: {e.Message.ReplaceLineEndings(" ")}", e);
        }

        var extents = new List<(long Offset, long Length)>();
        await using (image)
        {
            using var output = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read);
            RandomAccess.SetLength(output, header.VirtualSize);
            var readable = Math.Min(header.VirtualSize, image.VirtualSize);
            var buffer = new byte[CopyChunk];
            await foreach (var extent in image.GetMapAsync(0, readable, cancellationToken))
            {
                if (extent.Zero || !extent.Data && !extent.Present)
                    continue;
                extents.Add((extent.Start, extent.Length));
                for (var at = extent.Start; at < extent.End; at += CopyChunk)
                {
                    var length = (int)Math.Min(CopyChunk, extent.End - at);
                    await image.ReadAsync(at, buffer.AsMemory(0, length), cancellationToken);
                    await RandomAccess.WriteAsync(output, buffer.AsMemory(0, length), at, cancellationToken);
                }
            }
        }

        return new CrashBase(path, header.VirtualSize, extents);
    }

    /// <summary>The parts of [<paramref name="start"/>, <paramref name="end"/>) inside a data extent, in order.</summary>
    internal IEnumerable<(long Start, long End)> DataWithin(long start, long end)
    {
        // First extent that ends after start (the extents are sorted and disjoint).
        int low = 0, high = DataExtents.Count;
        while (low < high)
        {
            var mid = (low + high) / 2;
            if (DataExtents[mid].Offset + DataExtents[mid].Length <= start) low = mid + 1;
            else high = mid;
        }

        for (var i = low; i < DataExtents.Count && DataExtents[i].Offset < end; i++)
            yield return (Math.Max(start, DataExtents[i].Offset), Math.Min(end, DataExtents[i].Offset + DataExtents[i].Length));
    }

    /// <summary>Reads base bytes at <paramref name="offset"/> (zeros past the end).</summary>
    public void Read(long offset, Span<byte> buffer)
    {
        buffer.Clear();
        if (offset >= Size)
            return;
        var length = (int)Math.Min(buffer.Length, Size - offset);
        var read = 0;
        while (read < length)
        {
            var n = RandomAccess.Read(_handle, buffer[read..length], offset + read);
            if (n == 0)
                break;
            read += n;
        }
    }

    /// <summary>Closes the base file (it stays on disk).</summary>
    public void Dispose() => _handle.Dispose();
}
