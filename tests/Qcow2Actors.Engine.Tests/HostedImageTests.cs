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

    public async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        Dir.Dispose();
    }
}
