using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;

namespace Qcow2Actors.Engine.Tests.Bitmaps;

/// <summary>
/// Bitmap edits racing writes: a write sets its bits before its data lands, so an edit that clears
/// bits must not run between the two, or the next incremental backup misses data that changed.
/// </summary>
public sealed class BitmapEditRaceTests : HostedImageTests
{
    private const int KiB = 1024, MiB = 1024 * KiB;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    private static async Task<List<BitmapExtent>> ExtentsAsync(Qcow2Image image, string name)
    {
        var list = new List<BitmapExtent>();
        await foreach (var e in image.GetBitmapExtentsAsync(name, 0, image.VirtualSize)) list.Add(e);
        return list;
    }

    [Fact]
    public async Task A_clear_waits_for_the_write_in_flight_and_a_write_arriving_meanwhile_lands_in_the_cleared_bitmap()
    {
        var (opened, hold, _) = await OpenWithWriteHoldAsync("clear.qcow2", 0x01);
        await using var image = opened;
        await image.AddBitmapAsync("b", 65536);

        hold.Armed = true;
        // An owned cluster: its bit is set, then its data waits at the device.
        var inFlight = image.WriteAsync(0, Fill(4 * KiB, 0x02)).AsTask();
        await hold.Arrived.Task.WaitAsync(Timeout);
        var clear = image.ClearBitmapAsync("b").AsTask();
        // Before the fix the clear finished here, and the held data landed after it with no bit set.
        await Task.WhenAny(image.EditHoldingRequests, clear).WaitAsync(Timeout);
        Assert.False(clear.IsCompleted, "the clear waits for the write in flight");
        var arriving = image.WriteAsync(1 * MiB, Fill(512, 0x03)).AsTask();
        Assert.False(arriving.IsCompleted, "a write arriving during the clear waits for it");

        hold.Release.TrySetResult();
        await Task.WhenAll(inFlight, clear, arriving).WaitAsync(Timeout);
        // The write in flight belongs to the state before the clear; the one that waited, after it.
        Assert.Equal(
            [new(0, 1 * MiB, false), new(1 * MiB, 64 * KiB, true), new(1 * MiB + 64 * KiB, 3 * MiB - 64 * KiB, false)],
            await ExtentsAsync(image, "b"));
    }
}
