using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// <see cref="Qcow2Image.Header"/> is an immutable snapshot of the header: it follows the engine's changes
/// (resize, the journal's dirty bits), and a mutable copy a caller makes of it reaches neither the engine nor the disk.
/// </summary>
public sealed class HeaderSnapshotTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Changing_a_copy_of_the_header_an_image_hands_out_changes_nothing_in_the_engine()
    {
        var path = _dir.File("snapshot.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4 << 20 });
        await using var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        await using (var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            var handedOut = image.Header!;
            var copy = handedOut.ToHeader();
            copy.Size = 1 << 30;
            copy.IncompatibleFeatures |= IncompatibleFeatures.Corrupt;
            Assert.Equal(4 << 20, handedOut.Size);
            Assert.False(handedOut.IsCorrupt);
            Assert.Equal(4 << 20, image.Header!.Size);
            Assert.False(image.Header.IsCorrupt);

            await image.WriteAsync(0, new byte[4096]);
            await image.FlushAsync();
            Assert.True(image.Header.IsJournalPending, "the header handed out after a flush does not show the journal's bits");

            await image.ResizeAsync(8 << 20);
            Assert.Equal(8 << 20, image.Header.Size);
            Assert.False(image.Header.IsJournalPending);
        }

        await using var reopened = await Qcow2Image.OpenAsync(path);
        Assert.Equal(8 << 20, reopened.Header!.Size);
        Assert.False(reopened.Header.IsCorrupt);
    }
}
