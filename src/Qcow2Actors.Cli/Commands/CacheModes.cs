using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>qemu-img's <c>-t</c>/<c>-T</c> cache modes, mapped onto the two the engine has.</summary>
internal static class CacheModes
{
    /// <summary>
    /// none and directsync bypass the page cache (O_DIRECT); writeback, writethrough and unsafe go
    /// through it (the engine flushes when a verb asks, whichever mode). Null when <paramref name="mode"/> is not one of them.
    /// </summary>
    public static CacheMode? Parse(string? mode) => mode switch
    {
        null or "writeback" or "writethrough" or "unsafe" => CacheMode.Writeback,
        "none" or "off" or "directsync" => CacheMode.None,
        _ => null,
    };

    /// <summary>
    /// Parses <c>-t</c> (<paramref name="source"/> false) or <c>-T</c> of convert, compare and commit,
    /// refusing an unknown mode in qemu-img's words.
    /// </summary>
    public static CacheMode ParseOrRefuse(string? text, bool source) =>
        Parse(text) ?? throw new CliException($"Invalid {(source ? "source " : "")}cache option: {text}");
}
