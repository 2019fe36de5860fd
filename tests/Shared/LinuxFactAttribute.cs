namespace Qcow2Actors.Tests.Shared;

/// <summary>A fact about a Linux interface (/proc, preadv2, fadvise); skipped on other systems.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!OperatingSystem.IsLinux()) Skip = "needs Linux";
    }
}
