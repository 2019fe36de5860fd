using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Snapshots;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// What rebase and commit ask of an open image: a new backing name in one header write, and an
/// image emptied so it reads from its backing file again.
/// </summary>
public sealed class BackingChangeTests : HostedImageTests
{
    private const int KiB = 1024;

    private string NewChain()
    {
        string basePath = Dir.File("base.qcow2"), top = Dir.File("top.qcow2");
        ImageCreator.Create(basePath, new Qcow2CreateOptions { Size = 1024 * KiB });
        ImageCreator.Create(top, new Qcow2CreateOptions { Size = 1024 * KiB, BackingFile = "base.qcow2", BackingFormat = "qcow2" });
        return top;
    }

    [Fact]
    public async Task A_new_backing_name_is_in_the_header_after_reopening()
    {
        var top = NewChain();
        File.Copy(Dir.File("base.qcow2"), Dir.File("other.qcow2"));
        await using (var image = await Host.OpenAsync(top, new Qcow2OpenOptions { ReadOnly = false }))
        {
            await image.WriteAsync(0, new byte[4 * KiB]);
            await image.ChangeBackingFileAsync("other.qcow2", "qcow2");
            Assert.Equal("other.qcow2", image.Info.BackingFile);
        }
        await using (var reopened = await Qcow2Image.OpenAsync(top))
            Assert.Equal(("other.qcow2", "qcow2"), (reopened.Info.BackingFile, reopened.Info.BackingFormat));
        await using (var image = await Host.OpenAsync(top, new Qcow2OpenOptions { ReadOnly = false }))
            await image.ChangeBackingFileAsync(null, "qcow2");
        await using (var flat = await Qcow2Image.OpenAsync(top))
            Assert.Equal((null, null), (flat.Info.BackingFile, flat.Info.BackingFormat));
    }

    [Fact]
    public async Task A_name_too_long_for_cluster_0_is_refused_and_nothing_changes()
    {
        var top = NewChain();
        await using (var image = await Host.OpenAsync(top, new Qcow2OpenOptions { ReadOnly = false }))
        {
            var ex = await Assert.ThrowsAsync<SnapshotEditException>(() => image.ChangeBackingFileAsync(new string('x', 2000), "qcow2").AsTask());
            Assert.Contains("Could not change the backing file", ex.Message, StringComparison.Ordinal);
        }
        await using var reopened = await Qcow2Image.OpenAsync(top);
        Assert.Equal("base.qcow2", reopened.Info.BackingFile);
    }

    [Fact]
    public async Task An_emptied_image_reads_its_backing_file_again()
    {
        var top = NewChain();
        var pattern = Enumerable.Repeat((byte)0x5a, 64 * KiB).ToArray();
        await using (var b = await Host.OpenAsync(Dir.File("base.qcow2"), new Qcow2OpenOptions { ReadOnly = false }))
            await b.WriteAsync(0, pattern);
        await using (var image = await Host.OpenAsync(top, new Qcow2OpenOptions { ReadOnly = false }))
        {
            await image.WriteAsync(0, new byte[128 * KiB]);
            await image.WriteZeroesAsync(512 * KiB, 64 * KiB);
            await image.MakeEmptyAsync();
            var back = new byte[64 * KiB];
            await image.ReadAsync(0, back);
            Assert.Equal(pattern, back);
            var extents = new List<ImageExtent>();
            await foreach (var e in image.GetMapAsync(0, image.VirtualSize)) extents.Add(e);
            Assert.DoesNotContain(extents, e => e.Depth == 0 && e.Present);
        }
        Assert.Equal(0, Engine.Check.ImageChecker.CheckFile(top).ExitCode);
    }
}
