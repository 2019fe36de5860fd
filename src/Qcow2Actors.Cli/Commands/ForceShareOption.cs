using System.CommandLine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>qemu-img's <c>-U</c> / <c>--force-share</c>, shared by the read-only verbs.</summary>
internal static class ForceShareOption
{
    /// <summary>A new instance of the option (System.CommandLine wants one per command).</summary>
    public static Option<bool> Create() => new("-U", "--force-share")
    {
        Description = "open the image read-only sharing it with writers (q2a serve, qemu-nbd): no image lock is in the way, and what is read may change meanwhile",
    };
}
