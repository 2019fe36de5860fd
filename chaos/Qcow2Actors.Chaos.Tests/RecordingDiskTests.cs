using Qcow2Actors.Chaos.PowerLoss;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// The power-loss recorder pairs each logged call with the journal and the count of acknowledged ops
/// at the instant it was issued. A crash state is built from that pair and judged by the model of that
/// count, so the pair must be one a disk can hold: never a count that includes a flush whose batch the
/// journal lacks.
/// </summary>
public class RecordingDiskTests
{
    private const int ImageBytes = 4096;

    /// <summary>
    /// A stand-in for the engine acknowledging a flush at the worst moment: while a call is being
    /// logged. As the engine does, it persists the flush's batch to the journal file before it counts
    /// the op as acknowledged.
    /// </summary>
    private sealed class FlushAcknowledgedMidCall(string journalPath, byte[] batch)
    {
        private int _completed;

        public bool Armed { get; set; }

        public int Completed()
        {
            if (Armed)
            {
                Armed = false;
                using (var journal = new FileStream(journalPath, FileMode.Append, FileAccess.Write))
                    journal.Write(batch);
                _completed++;
            }
            return _completed;
        }
    }

    public enum CallKind
    {
        Write,
        Flush,
        SetLength,
    }

    [Theory]
    [InlineData(CallKind.Write)]
    [InlineData(CallKind.Flush)]
    [InlineData(CallKind.SetLength)]
    public void A_call_logged_while_a_flush_is_acknowledged_never_counts_it_without_its_batch(CallKind kind)
    {
        using var dir = new TempDir();
        var journalPath = dir.File("image.qcow2.journal");
        byte[] before = [.. "Q2AJRNL1"u8, 1, 2, 3, 4];
        byte[] batch = [5, 6, 7, 8, 9];
        File.WriteAllBytes(journalPath, before);
        var engine = new FlushAcknowledgedMidCall(journalPath, batch);
        using var disk = new RecordingDisk(new byte[ImageBytes], dir.File("image.qcow2"), journalPath, engine.Completed);

        engine.Armed = true;
        switch (kind)
        {
            case CallKind.Write:
                disk.Write(new byte[512], 0);
                break;
            case CallKind.Flush:
                disk.Flush();
                break;
            default:
                disk.SetLength(2 * ImageBytes);
                break;
        }

        var call = Assert.Single(disk.Log);
        Assert.Equal(1, call.Completed);
        Assert.NotNull(call.Journal);
        Assert.Equal([.. before, .. batch], call.Journal);
    }

    [Fact]
    public void A_call_logged_with_no_acknowledgement_in_flight_carries_the_journal_and_count_of_its_instant()
    {
        using var dir = new TempDir();
        var journalPath = dir.File("image.qcow2.journal");
        byte[] before = [.. "Q2AJRNL1"u8, 1, 2, 3, 4];
        File.WriteAllBytes(journalPath, before);
        var engine = new FlushAcknowledgedMidCall(journalPath, [5, 6, 7, 8, 9]);
        using var disk = new RecordingDisk(new byte[ImageBytes], dir.File("image.qcow2"), journalPath, engine.Completed);

        disk.Write(new byte[512], 0);

        var call = Assert.Single(disk.Log);
        Assert.Equal(0, call.Completed);
        Assert.NotNull(call.Journal);
        Assert.Equal(before, call.Journal);
    }
}
