using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.CrashLab.Materialize;

/// <summary>Writes a crash state (its delta over the base) as an image file, through the engine's public API.</summary>
public static class CrashStateWriter
{
    private const int CopyChunk = 1 << 20;

    /// <summary>Writes <paramref name="delta"/> over <paramref name="baseImage"/> to a new file at <paramref name="path"/>.</summary>
    public static async Task WriteAsync(ImageHost host, CrashBase baseImage, CrashStateDelta delta, string path,
        CrashStateImageFormat format, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(baseImage);
        ArgumentNullException.ThrowIfNull(delta);
        if (File.Exists(path))
            throw new IOException($"{path} already exists; the crash state is written to a new file.");
        switch (format)
        {
            case CrashStateImageFormat.Raw:
                await WriteRawAsync(baseImage, delta, path, cancellationToken);
                break;
            case CrashStateImageFormat.Overlay:
            case CrashStateImageFormat.Standalone:
                var overlay = format == CrashStateImageFormat.Overlay;
                var options = overlay
                    ? new Qcow2CreateOptions { Size = baseImage.Size, BackingFile = System.IO.Path.GetFullPath(baseImage.Path), BackingFormat = "raw" }
                    : new Qcow2CreateOptions { Size = baseImage.Size };
                var image = await host.CreateAsync(path, options, cancellationToken);
                await using (image)
                {
                    if (!overlay)
                        await CopyBaseAsync(baseImage, (at, data) => image.WriteAsync(at, data, cancellationToken: cancellationToken));
                    foreach (var (offset, data) in delta.Runs)
                        await image.WriteAsync(offset, data, cancellationToken: cancellationToken);
                    await image.FlushAsync(cancellationToken);
                }

                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(format), $"unknown crash state format {format}.");
        }
    }

    private static async Task WriteRawAsync(CrashBase baseImage, CrashStateDelta delta, string path, CancellationToken cancellationToken)
    {
        using var output = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
        RandomAccess.SetLength(output, baseImage.Size);
        await CopyBaseAsync(baseImage, (at, data) => RandomAccess.WriteAsync(output, data, at, cancellationToken));
        foreach (var (offset, data) in delta.Runs)
            await RandomAccess.WriteAsync(output, data, offset, cancellationToken);
    }

    // Copies the base's data extents, skipping all-zero chunks so the copy stays sparse.
    private static async Task CopyBaseAsync(CrashBase baseImage, Func<long, ReadOnlyMemory<byte>, ValueTask> write)
    {
        var buffer = new byte[CopyChunk];
        foreach (var (start, length) in baseImage.DataExtents)
        {
            for (var at = start; at < start + length; at += CopyChunk)
            {
                var count = (int)Math.Min(CopyChunk, start + length - at);
                baseImage.Read(at, buffer.AsSpan(0, count));
                if (buffer.AsSpan(0, count).ContainsAnyExcept((byte)0))
                    await write(at, buffer.AsMemory(0, count));
            }
        }
    }
}
