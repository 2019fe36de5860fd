using Qcow2Actors.Chaos.Workloads;

namespace Qcow2Actors.Chaos.Tests;

public class WorkloadTests
{
    [Fact]
    public void The_same_seed_gives_the_same_ops_and_the_same_data()
    {
        var a = Workload.Generate(123);
        var b = Workload.Generate(123);

        Assert.Equal(a.Operations, b.Operations);
        var write = a.Operations.First(o => o.Kind == WorkloadOpKind.Write);
        Assert.Equal(a.DataFor(write), b.DataFor(write));
        Assert.NotEqual(a.Operations, Workload.Generate(124).Operations);
    }

    [Fact]
    public void Every_op_stays_inside_the_disk_and_on_the_alignment()
    {
        var options = new WorkloadOptions { DiskSize = 4 * 1024 * 1024, Operations = 2000, Alignment = 4096, ClusterSize = 65536 };

        var workload = Workload.Generate(5, options);

        foreach (var op in workload.Operations.Where(o => o.Kind != WorkloadOpKind.Flush))
        {
            Assert.InRange(op.Length, 4096, options.MaxLength);
            Assert.True(op.Offset + op.Length <= options.DiskSize, op.ToString());
            Assert.Equal(0, op.Offset % 4096);
            Assert.Equal(0, op.Length % 4096);
        }
    }

    [Fact]
    public void The_default_mix_issues_every_kind_including_fua()
    {
        var ops = Workload.Generate(1, new WorkloadOptions { Operations = 1000 }).Operations;

        foreach (var kind in Enum.GetValues<WorkloadOpKind>()) Assert.Contains(ops, o => o.Kind == kind);
        Assert.Contains(ops, o => o.Fua);
        Assert.Contains(ops, o => o.Unmap);
    }

    [Fact]
    public void Unique_data_differs_between_ops_and_between_offsets()
    {
        var workload = Workload.Generate(9);
        var writes = workload.Operations.Where(o => o.Kind == WorkloadOpKind.Write).Take(2).ToArray();
        var first = workload.DataFor(writes[0]);
        var sameRangeLaterOp = workload.DataFor(writes[0] with { Index = writes[1].Index });

        Assert.NotEqual(first, sameRangeLaterOp);
        Assert.NotEqual(first.AsSpan(0, 8).ToArray(), first.AsSpan(8, 8).ToArray());
    }

    [Fact]
    public void Unique_data_depends_on_absolute_offsets_so_overlapping_slices_agree()
    {
        var workload = Workload.Generate(2, new WorkloadOptions { Alignment = 1, ClusterSize = 512 });
        var op = new WorkloadOp(3, WorkloadOpKind.Write, 100, 50);

        var whole = workload.DataFor(op);
        var slice = workload.DataFor(op with { Offset = 113, Length = 20 });

        Assert.Equal(whole.AsSpan(13, 20).ToArray(), slice);
    }

    [Fact]
    public void SingleByte_writes_match_their_qemu_io_command()
    {
        var workload = Workload.Generate(4, new WorkloadOptions { Pattern = PatternKind.SingleByte });
        var write = workload.Operations.First(o => o.Kind == WorkloadOpKind.Write);

        Assert.All(workload.DataFor(write), b => Assert.Equal(write.Pattern, b));
        Assert.NotEqual(0, write.Pattern);
        Assert.Matches($"^write( -f)? -P 0x{write.Pattern:x2} {write.Offset} {write.Length}$", write.ToQemuIo());
        Assert.Equal("flush", new WorkloadOp(0, WorkloadOpKind.Flush, 0, 0).ToQemuIo());
        Assert.Equal("write -z -u -f 0 512", new WorkloadOp(0, WorkloadOpKind.WriteZeroes, 0, 512, Fua: true, Unmap: true).ToQemuIo());
        Assert.Equal("discard 512 1024", new WorkloadOp(0, WorkloadOpKind.Discard, 512, 1024).ToQemuIo());
    }

    [Fact]
    public void Options_that_cannot_produce_a_valid_op_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => Workload.Generate(1, new WorkloadOptions { ClusterSize = 1000, Alignment = 512 }));
        Assert.Throws<ArgumentException>(() => Workload.Generate(1, new WorkloadOptions { DiskSize = 1024 }));
    }
}
