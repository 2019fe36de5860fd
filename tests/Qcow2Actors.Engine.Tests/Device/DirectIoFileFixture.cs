using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>Tests on files in a directory whose filesystem takes O_DIRECT, created on first use and removed after.</summary>
public abstract class DirectIoFileFixture : IDisposable
{
    private readonly Lazy<string> _dir = new(DirectIoDirectory.Create);

    public void Dispose()
    {
        if (_dir.IsValueCreated) Directory.Delete(_dir.Value, recursive: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>A new file of <paramref name="length"/> random bytes (seeded by the length).</summary>
    protected string NewFile(int length)
    {
        var path = Path.Combine(_dir.Value, Guid.NewGuid().ToString("N"));
        var bytes = new byte[length];
        new Random(length).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
        return path;
    }
}
