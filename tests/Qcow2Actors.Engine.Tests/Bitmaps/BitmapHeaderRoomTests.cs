using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Bitmaps;

/// <summary>
/// A first bitmap needs the bitmaps extension in cluster 0; when a small cluster and a long backing
/// file name leave no room, the add is refused before anything is allocated and the image goes on.
/// </summary>
public sealed class BitmapHeaderRoomTests : HostedImageTests
{
    private const int ClusterSize = 512;

    private async Task<int> HeaderLengthAsync(string path)
    {
        var cluster0 = new byte[ClusterSize];
        await using (var f = File.OpenRead(path)) await f.ReadExactlyAsync(cluster0);
        return ImageHeaderBlock.Read(cluster0).EncodedLength;
    }

    [QemuFact]
    public async Task Adding_the_first_bitmap_when_cluster_0_has_no_room_for_its_extension_is_refused_and_the_image_still_checkpoints()
    {
        await (await Host.CreateAsync(Dir.File("base.qcow2"), new Qcow2CreateOptions { Size = 1 << 20 })).DisposeAsync();
        Directory.CreateDirectory(Dir.File("d"));
        var probe = Dir.File("probe.qcow2");
        await (await Host.CreateAsync(probe, new Qcow2CreateOptions
        {
            Size = 1 << 20, ClusterSize = ClusterSize, BackingFile = "base.qcow2", BackingFormat = "qcow2",
        })).DisposeAsync();
        // A backing name that leaves 8 bytes of cluster 0 free: less than the extension's 32.
        int extra = ClusterSize - 8 - await HeaderLengthAsync(probe);
        Assert.True(extra > 5, $"cluster 0 already holds {ClusterSize - extra - 8} bytes");
        string prefix = extra % 2 == 0 ? string.Concat(Enumerable.Repeat("./", extra / 2)) : "d/../" + string.Concat(Enumerable.Repeat("./", (extra - 5) / 2));
        var path = Dir.File("overlay.qcow2");
        await (await Host.CreateAsync(path, new Qcow2CreateOptions
        {
            Size = 1 << 20, ClusterSize = ClusterSize, BackingFile = prefix + "base.qcow2", BackingFormat = "qcow2",
        })).DisposeAsync();
        Assert.Equal(ClusterSize - 8, await HeaderLengthAsync(path));

        await using (var image = await Host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            var refused = await Assert.ThrowsAsync<InvalidOperationException>(async () => await image.AddBitmapAsync("b"));
            Assert.Equal("Can't make bitmap 'b' persistent: the 512-byte header cluster has no room for the bitmaps extension (a shorter backing file name would make room)", refused.Message);
            Assert.Empty(image.Bitmaps);
            await image.WriteAsync(0, new byte[4096]);
            await image.CheckpointAsync();
            Assert.Null(image.ReadOnlyReason);
        }
        QemuTools.AssertCheckClean(path);
    }
}
