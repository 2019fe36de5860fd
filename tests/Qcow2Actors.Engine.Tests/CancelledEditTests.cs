
namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// A caller that cancels while the image actor runs its edit gets its call back at once, but the edit cannot be
/// called back: it keeps the request gate (a bitmap edit keeps writes out) and its effects (a resize's new size)
/// until it has finished.
/// </summary>
public sealed class CancelledEditTests : HostedImageTests
{
    private const int KiB = 1024, MiB = 1024 * KiB;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_bitmap_edit_cancelled_at_its_device_write_keeps_writes_out_until_it_ends()
    {
        var (image, hold, _) = await OpenWithWriteHoldAsync("bitmap.qcow2", 0);
        await using var _ = image;
        // Released on every path: a held write would keep the image's close waiting.
        try
        {
            using var cancel = new CancellationTokenSource();
            hold.Armed = true;
            var add = image.AddBitmapAsync("b", 65536, cancellationToken: cancel.Token).AsTask();
            await hold.Arrived.Task.WaitAsync(Timeout);
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => add.WaitAsync(Timeout));

            // Before the fix the cancelled call opened the gate here, under the running edit.
            Assert.True(image.EditHoldsRequests, "the gate stays closed while the edit runs");
            var arriving = image.WriteAsync(1 * MiB, new byte[512]).AsTask();
            Assert.False(arriving.IsCompleted, "a write arriving during the edit waits for it");

            hold.Release.TrySetResult();
            await arriving.WaitAsync(Timeout);
            Assert.False(image.EditHoldsRequests);
            // The edit finished: the bitmap exists and the write that waited for it is in it.
            var extents = new List<BitmapExtent>();
            await foreach (var e in image.GetBitmapExtentsAsync("b", 0, image.VirtualSize)) extents.Add(e);
            Assert.Equal([new(0, 1 * MiB, false), new(1 * MiB, 64 * KiB, true), new(1 * MiB + 64 * KiB, 3 * MiB - 64 * KiB, false)], extents);
        }
        finally
        {
            hold.Release.TrySetResult();
        }
    }

    [Fact]
    public async Task A_resize_cancelled_at_its_device_write_still_updates_the_image_info_when_it_ends()
    {
        var (image, hold, _) = await OpenWithWriteHoldAsync("resize.qcow2", 0);
        await using var _ = image;
        // Released on every path: a held write would keep the image's close waiting.
        try
        {
            using var cancel = new CancellationTokenSource();
            hold.Armed = true;
            var resize = image.ResizeAsync(64 * MiB, cancel.Token).AsTask();
            await hold.Arrived.Task.WaitAsync(Timeout);
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => resize.WaitAsync(Timeout));
            Assert.Equal(4 * MiB, image.Info.VirtualSize);
            Assert.Equal(1, image.RequestsInside); // the resize still runs: its admission stays

            hold.Release.TrySetResult();
            // The resize runs to the end in the image actor and its admission is let go only after the image's info
            // follows it; a check closes the gate, so it starts only once that has happened.
            Assert.Equal(0, (await image.CheckAsync().AsTask().WaitAsync(Timeout)).ExitCode);
            Assert.Equal(64 * MiB, image.Info.VirtualSize);
            Assert.Equal(64 * MiB, image.VirtualSize);
        }
        finally
        {
            hold.Release.TrySetResult();
        }
    }
    [Fact]
    public async Task A_write_zeroes_cancelled_at_its_device_write_keeps_its_admission_until_it_ends()
    {
        var (image, hold, _) = await OpenWithWriteHoldAsync("zeroes.qcow2", 0x5A);
        await using var _ = image;
        // Released on every path: a held write would keep the image's close waiting.
        try
        {
            using var cancel = new CancellationTokenSource();
            hold.Armed = true;
            // Part of an allocated cluster: the table actor writes the zeros into it, and that write is held.
            var zero = image.WriteZeroesAsync(4 * KiB, 4 * KiB, cancellationToken: cancel.Token).AsTask();
            await hold.Arrived.Task.WaitAsync(Timeout);
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => zero.WaitAsync(Timeout));

            // Before the fix the cancelled call left the gate here, and a snapshot edit could run beside the zeroing.
            Assert.Equal(1, image.RequestsInside);

            hold.Release.TrySetResult();
            // A check closes the gate: it starts once the zeroing has ended and let its admission go.
            Assert.Equal(0, (await image.CheckAsync().AsTask().WaitAsync(Timeout)).ExitCode);
            Assert.Equal(0, image.RequestsInside);
            var back = new byte[64 * KiB];
            await image.ReadAsync(0, back);
            Assert.All(back.AsSpan(0, 4 * KiB).ToArray(), b => Assert.Equal(0x5A, b));
            Assert.All(back.AsSpan(4 * KiB, 4 * KiB).ToArray(), b => Assert.Equal(0, b));
            Assert.All(back.AsSpan(8 * KiB).ToArray(), b => Assert.Equal(0x5A, b));
        }
        finally
        {
            hold.Release.TrySetResult();
        }
    }
}
