using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Read;

/// <summary>
/// <see cref="Qcow2OpenOptions.ShareBackingChain"/>: a write open whose chain is shared lets a
/// second open write its backing file (what commit needs), while the image itself stays locked
/// against any other writer; without it the backing file's reader lock refuses that writer.
/// </summary>
public sealed class ShareBackingChainTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private (string Top, string Base) Chain()
    {
        string bas = _dir.File("base.qcow2"), top = _dir.File("top.qcow2");
        ImageCreator.Create(bas, new Qcow2CreateOptions { Size = 1 << 20 });
        ImageCreator.Create(top, new Qcow2CreateOptions { Size = 1 << 20, BackingFile = "base.qcow2", BackingFormat = "qcow2" });
        return (top, bas);
    }

    [Fact]
    public async Task A_shared_chain_lets_another_open_write_the_backing_file_but_not_the_image()
    {
        var (top, bas) = Chain();
        await using var host = ImageHost.Create();
        await using var image = await host.OpenAsync(top, new Qcow2OpenOptions { ReadOnly = false, ShareBackingChain = true });
        await using (var backing = await host.OpenAsync(bas, new Qcow2OpenOptions { ReadOnly = false }))
            await backing.WriteAsync(0, new byte[512]);
        Assert.Throws<ImageLockException>(() => ImageLock.Acquire(top, LockMode.Writer).Dispose());
    }

    [Fact]
    public async Task Without_it_the_backing_files_reader_lock_refuses_a_writer()
    {
        var (top, bas) = Chain();
        await using var host = ImageHost.Create();
        await using var image = await host.OpenAsync(top, new Qcow2OpenOptions { ReadOnly = false });
        await Assert.ThrowsAsync<ImageLockException>(async () =>
            await (await host.OpenAsync(bas, new Qcow2OpenOptions { ReadOnly = false })).DisposeAsync());
    }
}
