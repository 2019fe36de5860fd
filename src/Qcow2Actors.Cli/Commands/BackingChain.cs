using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// Backing file names as qemu-img resolves them: a relative name is relative to the directory of
/// the image that names it (not the working directory); an absolute one stands for itself.
/// </summary>
internal static class BackingChain
{
    /// <summary>The path to open for <paramref name="name"/>, named by the image at <paramref name="overlayPath"/> (as the user spelled it).</summary>
    public static string Resolve(string overlayPath, string name) =>
        Path.IsPathRooted(name) ? name : Path.Combine(Path.GetDirectoryName(overlayPath) ?? "", name);

    /// <summary>One image below the top: where it is, how it is opened, and its depth (1 = the top's backing file).</summary>
    public sealed record Layer(string Path, string? Format, int Depth);

    /// <summary>
    /// The backing chain below <paramref name="topPath"/>, nearest first, read without taking
    /// locks that would stand in the way of the caller's own write opens (force-share).
    /// </summary>
    public static async Task<List<Layer>> ReadAsync(string topPath, string? topFormat, CancellationToken ct)
    {
        var layers = new List<Layer>();
        string path = topPath;
        string? format = topFormat;
        for (int depth = 1; ; depth++)
        {
            Qcow2ImageInfo info;
            await using (var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { Format = format, ForceShare = true }, ct).ConfigureAwait(false))
                info = image.Info;
            if (info.BackingFile is null) return layers;
            path = Resolve(path, info.BackingFile);
            format = info.BackingFormat;
            layers.Add(new Layer(path, format, depth));
        }
    }
}
