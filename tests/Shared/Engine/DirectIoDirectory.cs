using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Tests.Shared;

/// <summary>
/// A directory on a filesystem that takes O_DIRECT (cache=none): the temp directory, else the test
/// binaries' directory, each tried by opening a file there with <see cref="DirectFileBlockDevice"/>.
/// </summary>
public static class DirectIoDirectory
{
    private static readonly Lazy<(string? Path, string Reason)> Found = new(Probe);

    /// <summary>Null when some candidate takes O_DIRECT (or CI=true, where a missing one must fail), else the skip reason.</summary>
    public static string? SkipReason => Found.Value.Path is not null || QemuTools.IsCi ? null : Found.Value.Reason;

    /// <summary>A new empty directory under the candidate that takes O_DIRECT; fails with the reason when none does.</summary>
    public static string Create()
    {
        var root = Found.Value.Path ?? throw new InvalidOperationException(Found.Value.Reason);
        return Directory.CreateDirectory(System.IO.Path.Combine(root, "q2a-direct-" + Guid.NewGuid().ToString("N"))).FullName;
    }

    private static (string?, string) Probe()
    {
        var tried = new List<string>();
        foreach (var candidate in new[] { System.IO.Path.GetTempPath(), AppContext.BaseDirectory })
        {
            var file = System.IO.Path.Combine(candidate, "q2a-direct-probe-" + Guid.NewGuid().ToString("N"));
            try
            {
                File.WriteAllBytes(file, new byte[8192]);
                using var device = DirectFileBlockDevice.Open(file, writable: true);
                device.Write(new byte[] { 1 }, 100);
                return (candidate, "");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
            {
                tried.Add($"{candidate}: {e.Message}");
            }
            finally
            {
                File.Delete(file);
            }
        }
        return (null, "no filesystem here takes O_DIRECT (" + string.Join("; ", tried) + "); set CI=true to make this a failure");
    }
}

/// <summary>A fact that needs a directory on a filesystem that takes O_DIRECT; skips without one outside CI.</summary>
public sealed class DirectIoFactAttribute : FactAttribute
{
    public DirectIoFactAttribute() { Skip = DirectIoDirectory.SkipReason; }
}
