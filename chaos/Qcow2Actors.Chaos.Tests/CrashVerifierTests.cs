using Qcow2Actors.Chaos.Workloads;

namespace Qcow2Actors.Chaos.Tests;

public class CrashVerifierTests
{
    private static byte[] Filled(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    private static byte[] Image(int size, params (int Offset, int Length, byte Value)[] runs)
    {
        var image = new byte[size];
        foreach (var (offset, length, value) in runs) image.AsSpan(offset, length).Fill(value);
        return image;
    }

    [Fact]
    public void The_flushed_image_passes()
    {
        var model = new DiskModel(4096);
        model.Write(0, Filled(512, 1), opIndex: 0);
        model.Flush(1);

        var verdict = CrashVerifier.Verify(model, Image(4096, (0, 512, 1)));

        Assert.True(verdict.Ok, verdict.Message);
    }

    [Fact]
    public void A_lost_flushed_write_is_reported_at_its_first_byte_in_one_line()
    {
        var model = new DiskModel(4096);
        model.Write(1024, Filled(512, 7), opIndex: 4);
        model.Flush(5);

        var verdict = CrashVerifier.Verify(model, new byte[4096]);

        Assert.False(verdict.Ok);
        Assert.Equal(1024, verdict.Offset);
        Assert.DoesNotContain('\n', verdict.Message);
        Assert.Contains("offset 1024", verdict.Message, StringComparison.Ordinal);
        Assert.Contains("#4", verdict.Message, StringComparison.Ordinal);
        Assert.Contains("flushed by #5", verdict.Message, StringComparison.Ordinal);
        Assert.Throws<CrashConsistencyException>(() => verdict.ThrowIfFailed("seed 1"));
    }

    [Fact]
    public void An_unflushed_write_may_be_present_absent_or_torn()
    {
        var model = new DiskModel(2048);
        model.Write(0, Filled(1024, 3), opIndex: 0);

        Assert.True(CrashVerifier.Verify(model, new byte[2048]).Ok);
        Assert.True(CrashVerifier.Verify(model, Image(2048, (0, 1024, 3))).Ok);
        Assert.True(CrashVerifier.Verify(model, Image(2048, (512, 512, 3))).Ok);
    }

    [Fact]
    public void A_value_nobody_wrote_is_reported()
    {
        var model = new DiskModel(2048);
        model.Write(0, Filled(512, 3), opIndex: 0);

        var verdict = CrashVerifier.Verify(model, Image(2048, (1500, 1, 0x99)));

        Assert.Equal(1500, verdict.Offset);
        Assert.Contains("read 0x99", verdict.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Any_of_several_unflushed_values_of_a_byte_is_legal_but_an_older_flushed_one_is_not_after_a_later_flush()
    {
        var model = new DiskModel(512);
        model.Write(0, Filled(512, 1), opIndex: 0);
        model.Flush(1);
        model.Write(0, Filled(512, 2), opIndex: 2);
        model.Write(0, Filled(512, 3), opIndex: 3);

        Assert.True(CrashVerifier.Verify(model, Filled(512, 1)).Ok);
        Assert.True(CrashVerifier.Verify(model, Filled(512, 2)).Ok);
        Assert.True(CrashVerifier.Verify(model, Filled(512, 3)).Ok);
        Assert.False(CrashVerifier.Verify(model, new byte[512]).Ok);
    }

    [Fact]
    public void A_completed_fua_write_must_survive_without_a_flush()
    {
        var model = new DiskModel(1024);
        model.Write(0, Filled(512, 5), fua: true, opIndex: 0);

        Assert.False(CrashVerifier.Verify(model, new byte[1024]).Ok);
        Assert.True(CrashVerifier.Verify(model, Image(1024, (0, 512, 5))).Ok);
    }

    [Fact]
    public void A_completed_fua_write_rules_out_the_unflushed_values_it_overwrote()
    {
        var model = new DiskModel(512);
        model.Write(0, Filled(512, 1), opIndex: 0);
        model.Write(0, Filled(512, 2), fua: true, opIndex: 1);

        Assert.False(CrashVerifier.Verify(model, Filled(512, 1)).Ok);
        Assert.True(CrashVerifier.Verify(model, Filled(512, 2)).Ok);
    }

    [Fact]
    public void An_interrupted_fua_write_guarantees_nothing()
    {
        var model = new DiskModel(1024);
        model.Write(0, Filled(512, 5), fua: true, completed: false, opIndex: 0);

        Assert.True(CrashVerifier.Verify(model, new byte[1024]).Ok);
    }

    [Fact]
    public void A_discarded_range_may_read_as_zeros_or_as_before_even_after_a_flush()
    {
        var model = new DiskModel(1024);
        model.Write(0, Filled(1024, 8), opIndex: 0);
        model.Flush(1);
        model.Discard(0, 512, opIndex: 2);
        model.Flush(3);

        Assert.True(CrashVerifier.Verify(model, Filled(1024, 8)).Ok);
        Assert.True(CrashVerifier.Verify(model, Image(1024, (512, 512, 8))).Ok);
        Assert.False(CrashVerifier.Verify(model, Image(1024, (0, 512, 8))).Ok);
    }

    [Fact]
    public void A_recovered_image_of_the_wrong_size_fails()
    {
        var verdict = CrashVerifier.Verify(new DiskModel(1024), new byte[512]);

        Assert.False(verdict.Ok);
        Assert.Contains("512 bytes", verdict.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckRead_accepts_the_last_written_data_and_names_a_stale_byte()
    {
        var model = new DiskModel(1024);
        model.Write(0, Filled(512, 1), opIndex: 0);
        model.Write(256, Filled(256, 2), opIndex: 1);

        Assert.Null(model.CheckRead(0, Image(1024, (0, 256, 1), (256, 256, 2))));
        var stale = model.CheckRead(0, Filled(512, 1));
        Assert.NotNull(stale);
        Assert.StartsWith("offset 256", stale, StringComparison.Ordinal);
    }

    [Fact]
    public void FromLog_makes_everything_before_a_logged_flush_durable_and_nothing_after_the_last_started_op_legal()
    {
        var workload = Workload.Generate(3, new WorkloadOptions { DiskSize = 1 << 20, Operations = 60, FlushWeight = 20 });
        var flush = workload.Operations.First(o => o.Kind == WorkloadOpKind.Flush && o.Index > 5).Index;
        var lines = Enumerable.Range(0, flush + 1)
            .SelectMany(i => new[] { ChaosProtocol.StartedLine(i), workload.Operations[i].Kind == WorkloadOpKind.Flush ? ChaosProtocol.FlushedLine(i) : ChaosProtocol.DoneLine(i) });
        var log = ChaosLog.Parse(lines);

        var model = DiskModel.FromLog(workload, log);

        var durable = new byte[1 << 20];
        for (var i = 0; i < flush; i++) WriteInto(durable, workload, workload.Operations[i]);
        Assert.True(CrashVerifier.Verify(model, durable).Ok);
        Assert.Equal(0, model.PendingCount);
        var later = workload.Operations.First(o => o.Index > flush && o.Kind == WorkloadOpKind.Write);
        WriteInto(durable, workload, later);
        Assert.False(CrashVerifier.Verify(model, durable).Ok);
    }

    [Fact]
    public void ChaosLog_ignores_noise_and_counts_only_protocol_lines()
    {
        var log = ChaosLog.Parse(["hello", "STARTED 0", "DONE 0", "STARTED 1", "FLUSHED 1", "STARTED 2", "FLUSHED x", "warn: FLUSHED 9"]);

        Assert.Equal(2, log.LastStarted);
        Assert.Equal(1, log.LastFlushed);
        Assert.Equal([0], log.Done);
    }

    private static void WriteInto(byte[] image, Workload workload, WorkloadOp op)
    {
        switch (op.Kind)
        {
            case WorkloadOpKind.Write:
                workload.DataFor(op).CopyTo(image, op.Offset);
                break;
            case WorkloadOpKind.WriteZeroes:
            case WorkloadOpKind.Discard:
                image.AsSpan((int)op.Offset, (int)op.Length).Clear();
                break;
        }
    }
}
