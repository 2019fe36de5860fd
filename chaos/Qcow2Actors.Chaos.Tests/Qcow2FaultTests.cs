using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Chaos.Qcow2;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Tests.Shared;
using Xunit.Abstractions;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// The engine under injected I/O errors: a failed fsync is final (read-only with the reason,
/// never retried, nothing acknowledged before it lost), ENOSPC on a data write fails that write
/// with the errno and leaves the image readable.
/// </summary>
public class Qcow2FaultTests(ITestOutputHelper output)
{
    private const long DiskSize = 4 * 1024 * 1024;

    [QemuTheory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_failed_flush_turns_the_image_read_only_for_good_and_keeps_what_was_flushed_before(int failingDeviceFlush)
    {
        using var dir = new TempDir();
        var spec = new ChaosImageSpec { DiskSize = DiskSize, ClusterSize = 65536 };
        var path = dir.File("image.qcow2");
        var initial = await spec.CreateAsync(path, dir.File("unused"));
        var workload = Workload.Generate(31 + failingDeviceFlush, spec.WorkloadOptions(60, maxLength: 128 * 1024));
        var model = new DiskModel(DiskSize, initial);
        FaultInjectingDevice? faulty = null;
        // Once, keep the failed flush's unsynced writes on the disk (they may or may not have landed), for more crash states.
        var options = new FaultInjectionOptions { LoseUnsyncedWritesOnFlushFailure = failingDeviceFlush != 2 };
        await using var engine = await EngineOnSimulatedDisk.OpenAsync(path, spec.EngineHocon(), disk => faulty = new FaultInjectingDevice(disk, options));
        var target = new Qcow2ChaosTarget(engine.Image, ownsImage: false);

        // A healthy start: run through the third flush op.
        var thirdFlush = workload.Operations.Where(o => o.Kind == WorkloadOpKind.Flush).Skip(2).First().Index;
        await WorkloadRunner.RunAsync(target, workload, model, count: thirdFlush + 1);
        faulty!.AddRule(FaultRule.FailNth(FaultOperations.Flush, failingDeviceFlush));

        int? failedAt = null;
        long flushesAtFailure = 0;
        string? reason = null;
        for (var i = thirdFlush + 1; i < workload.Operations.Count; i++)
        {
            var op = workload.Operations[i];
            Exception? error = null;
            try
            {
                await WorkloadRunner.RunAsync(target, workload, model, first: i, count: 1);
            }
            catch (Exception e)
            {
                error = e;
            }
            if (failedAt is null)
            {
                if (error is null) continue;
                // Only a flush (or a FUA op, which flushes) can meet a failing fsync.
                Assert.True(op.Kind == WorkloadOpKind.Flush || op.Fua, $"op {op} failed before any flush failed: {error}");
                failedAt = i;
                flushesAtFailure = engine.Counters.Flushes;
                Assert.True(engine.Image.IsReadOnly, $"image still writable after {error.Message}");
                reason = engine.Image.ReadOnlyReason;
                Assert.False(string.IsNullOrEmpty(reason));
                output.WriteLine($"flush failed at {op}: {error.GetType().Name}: {error.Message}; read-only: {reason}");
                continue;
            }
            // From now on every mutation fails, naming why, and no fsync is ever tried again.
            if (op.Kind == WorkloadOpKind.Flush)
            {
                Assert.NotNull(error);
            }
            else
            {
                Assert.NotNull(error);
                Assert.Contains(reason!, error!.Message, StringComparison.Ordinal);
            }
        }
        Assert.NotNull(failedAt);
        Assert.Equal(flushesAtFailure, engine.Counters.Flushes);
        Assert.True(engine.Image.IsReadOnly);

        // Reads still work and see every write that completed (a failed flush does not undo the page cache).
        var live = new byte[DiskSize];
        await engine.Image.ReadAsync(0, live);

        // Then the machine dies: whatever survives must hold every write flushed before the failure.
        var journal = await engine.CrashAsync();
        var states = await engine.VerifyCrashStatesAsync(journal, model, dir.Path, 8, new Random(failingDeviceFlush),
            $"device flush #{failingDeviceFlush} after op #{thirdFlush} failed");
        output.WriteLine($"{states} crash states after the failed flush recovered and verified");
    }

    [QemuFact]
    public async Task Enospc_on_a_data_write_fails_that_write_with_the_errno_and_the_image_stays_readable()
    {
        using var dir = new TempDir();
        var spec = new ChaosImageSpec { DiskSize = DiskSize, ClusterSize = 65536 };
        var path = dir.File("image.qcow2");
        await spec.CreateAsync(path, dir.File("unused"));
        FaultInjectingDevice? faulty = null;
        await using var engine = await EngineOnSimulatedDisk.OpenAsync(path, spec.EngineHocon(), disk => faulty = new FaultInjectingDevice(disk));
        var image = engine.Image;
        var first = Enumerable.Repeat((byte)0x5a, 65536).ToArray();
        await image.WriteAsync(0, first);
        await image.FlushAsync();

        faulty!.AddRule(FaultRule.FailFrom(FaultOperations.Write, 1, Errno.ENOSPC));
        var error = await Assert.ThrowsAnyAsync<Exception>(async () => await image.WriteAsync(1024 * 1024, new byte[65536].Select(_ => (byte)0xa5).ToArray()));
        output.WriteLine($"write failed with {error.GetType().Name}: {error.Message}; read-only: {image.ReadOnlyReason ?? "no"}");
        var io = Assert.IsAssignableFrom<IOException>(Unwrap(error));
        Assert.True(io.HResult == Errno.ENOSPC || io.Message.Contains("ENOSPC", StringComparison.Ordinal), $"no ENOSPC in {io}");

        var back = new byte[65536];
        await image.ReadAsync(0, back);
        Assert.Equal(first, back);
        await image.ReadAsync(1024 * 1024, back);
        Assert.True(back.All(b => b is 0 or 0xa5), "the failed write left bytes nobody wrote");
    }

    private static Exception Unwrap(Exception e)
    {
        while (e is AggregateException { InnerException: { } inner }) e = inner;
        return e;
    }
}
