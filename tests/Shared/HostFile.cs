using System.Globalization;

namespace Qcow2Actors.Tests.Shared;

/// <summary>What a file really occupies on the host filesystem.</summary>
public static class HostFile
{
    /// <summary>Allocated bytes (st_blocks × block unit, what du counts), read with stat(1).</summary>
    public static long AllocatedBytes(string path)
    {
        var r = QemuTools.Run("stat", "-c", "%b %B", path);
        Assert.True(r.ExitCode == 0, $"stat {path}: {r.StdErr}");
        var parts = r.StdOut.Trim().Split(' ');
        return long.Parse(parts[0], CultureInfo.InvariantCulture) * long.Parse(parts[1], CultureInfo.InvariantCulture);
    }
}
