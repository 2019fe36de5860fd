using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// Tests that open images read-write in one <see cref="ImageHost"/> of their own, in a temp
/// directory, with timed checkpoints off (a checkpoint lands only at size or close, never in the
/// middle of what a test checks).
/// </summary>
public abstract class HostedImageTests : IAsyncLifetime
{
    protected TempDir Dir { get; } = new();

    protected ImageHost Host { get; private set; } = null!;

    public Task InitializeAsync()
    {
        Host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        return Task.CompletedTask;
    }

    /// <summary>
    /// Creates a 4 MiB image <paramref name="name"/> in <see cref="Dir"/> and opens it writable over a device whose
    /// first write once the returned hold is armed waits at it; its first 64 KiB cluster is written with
    /// <paramref name="fill"/> and flushed, so writes there go straight to the device.
    /// </summary>
    private protected async Task<(Qcow2Image Image, WriteHold Hold, string Path)> OpenWithWriteHoldAsync(string name, byte fill)
    {
        var path = Dir.File(name);
        var hold = new WriteHold();
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, writable) => new HoldOneWrite(FileBlockDevice.Open(p, writable), hold),
        };
        await (await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 4 * 1024 * 1024 })).DisposeAsync();
        var image = await Host.OpenAsync(path, options);
        await image.WriteAsync(0, Enumerable.Repeat(fill, 64 * 1024).ToArray());
        await image.FlushAsync();
        return (image, hold, path);
    }

    public async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        Dir.Dispose();
    }
}
