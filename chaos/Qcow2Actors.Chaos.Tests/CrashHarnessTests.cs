using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// The whole loop the engine's crash tests will run (workload → power cut → every crash state →
/// recover → verify), exercised on a raw disk that keeps the contract and on targets that break it,
/// so the harness is known to pass the good and catch the bad before the engine arrives.
/// </summary>
public class CrashHarnessTests
{
    private static readonly WorkloadOptions Small = new()
    {
        DiskSize = 1 << 20,
        Operations = 80,
        ClusterSize = 16 * 1024,
        MaxLength = 64 * 1024,
    };

    [Fact]
    public async Task A_raw_disk_survives_every_crash_state_at_every_tenth_point_of_a_workload()
    {
        var workload = Workload.Generate(2024, Small);
        var checkedStates = 0;
        for (var cut = 0; cut <= 200; cut += 10)
        {
            var device = new CrashSimulatingDevice(new byte[Small.DiskSize]);
            device.PowerCutAfter(cut);
            var model = new DiskModel(Small.DiskSize);
            await using var target = new RawDeviceTarget(device, Small.DiskSize);
            try
            {
                await WorkloadRunner.RunAsync(target, workload, model);
            }
            catch (ChaosIOException)
            {
                // The power cut: the harness records the interrupted op and carries on to recovery.
            }

            foreach (var crash in device.EnumerateCrashStates(12, new Random(cut)))
            {
                CrashVerifier.Verify(model, crash.Content).ThrowIfFailed($"cut {cut}, {crash.Description}");
                checkedStates++;
            }
        }
        Assert.True(checkedStates > 100, $"only {checkedStates} crash states checked");
    }

    [Fact]
    public async Task A_target_that_acknowledges_flushes_without_syncing_is_caught()
    {
        var workload = Workload.Generate(7, Small);
        var device = new CrashSimulatingDevice(new byte[Small.DiskSize]);
        var model = new DiskModel(Small.DiskSize);
        await using var target = new LyingFlushTarget(new RawDeviceTarget(device, Small.DiskSize));

        await WorkloadRunner.RunAsync(target, workload, model);
        var verdict = CrashVerifier.Verify(model, device.Crash(CrashMode.LoseUnsynced, new Random(1)).Content);

        Assert.False(verdict.Ok);
        Assert.Contains("flushed by #", verdict.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_target_that_writes_one_sector_off_is_caught_even_when_nothing_crashed()
    {
        var workload = Workload.Generate(8, Small);
        var device = new CrashSimulatingDevice(new byte[Small.DiskSize + 512]);
        var model = new DiskModel(Small.DiskSize);
        await using var target = new ShiftedTarget(device, Small.DiskSize);

        await WorkloadRunner.RunAsync(target, workload, model);
        var verdict = await CrashVerifier.VerifyAsync(model, new RawDeviceTarget(device, Small.DiskSize));

        Assert.False(verdict.Ok);
    }

    [Fact]
    public async Task The_runner_logs_the_protocol_and_the_log_rebuilds_an_equivalent_model()
    {
        var workload = Workload.Generate(11, Small);
        var device = new CrashSimulatingDevice(new byte[Small.DiskSize]);
        await using var target = new RawDeviceTarget(device, Small.DiskSize);
        var stdout = new StringWriter();

        await WorkloadRunner.RunAsync(target, workload, protocol: stdout, count: 50);
        var log = ChaosLog.Parse(stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var model = DiskModel.FromLog(workload, log);

        Assert.Equal(49, log.LastStarted);
        Assert.Equal(workload.Operations.Take(50).Count(o => o.Kind == WorkloadOpKind.Flush), model.FlushCount);
        foreach (var crash in device.EnumerateCrashStates(20, new Random(2)))
            CrashVerifier.Verify(model, crash.Content).ThrowIfFailed(crash.Description);
    }

    [Fact]
    public async Task An_op_cut_short_by_the_power_is_recorded_as_interrupted_not_lost()
    {
        var workload = Workload.Generate(12, Small);
        var first = workload.Operations.First(o => o.Kind == WorkloadOpKind.Write);
        var device = new CrashSimulatingDevice(new byte[Small.DiskSize]);
        device.PowerCutAfter(0);
        var model = new DiskModel(Small.DiskSize);
        await using var target = new RawDeviceTarget(device, Small.DiskSize);

        await Assert.ThrowsAsync<ChaosIOException>(() => WorkloadRunner.RunAsync(target, workload, model, first: first.Index, count: 1));

        Assert.Equal(1, model.PendingCount);
        var landed = new byte[Small.DiskSize];
        workload.DataFor(first).CopyTo(landed, first.Offset);
        Assert.True(CrashVerifier.Verify(model, landed).Ok);
    }

    [Fact]
    public async Task A_raw_disk_under_a_sticky_flush_failure_keeps_the_contract_for_what_was_acknowledged()
    {
        var workload = Workload.Generate(13, Small);
        var crash = new CrashSimulatingDevice(new byte[Small.DiskSize]);
        var faulty = new FaultInjectingDevice(crash, null, FaultRule.FailNth(FaultOperations.Flush, 3));
        var model = new DiskModel(Small.DiskSize);
        await using var target = new RawDeviceTarget(faulty, Small.DiskSize);

        await Assert.ThrowsAsync<ChaosIOException>(() => WorkloadRunner.RunAsync(target, workload, model));

        foreach (var state in crash.EnumerateCrashStates(20, new Random(4)))
            CrashVerifier.Verify(model, state.Content).ThrowIfFailed(state.Description);
    }

    /// <summary>Acknowledges flushes without making anything durable: the bug the harness exists to catch.</summary>
    private sealed class LyingFlushTarget(IChaosTarget inner) : IChaosTarget
    {
        public long VirtualSize => inner.VirtualSize;

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default) =>
            inner.WriteAsync(offset, data, false, cancellationToken);

        public ValueTask WriteZeroesAsync(long offset, long length, bool unmap = false, bool fua = false, CancellationToken cancellationToken = default) =>
            inner.WriteZeroesAsync(offset, length, unmap, false, cancellationToken);

        public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
            inner.DiscardAsync(offset, length, cancellationToken);

        public ValueTask FlushAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            inner.ReadAsync(offset, buffer, cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    /// <summary>Writes every op one sector past where it belongs: a mapping bug.</summary>
    private sealed class ShiftedTarget(IBlockDevice device, long size) : IChaosTarget
    {
        private readonly RawDeviceTarget _raw = new(device, size + 512);

        public long VirtualSize => size;

        public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua = false, CancellationToken cancellationToken = default) =>
            _raw.WriteAsync(offset + 512, data, fua, cancellationToken);

        public ValueTask WriteZeroesAsync(long offset, long length, bool unmap = false, bool fua = false, CancellationToken cancellationToken = default) =>
            _raw.WriteZeroesAsync(offset + 512, length, unmap, fua, cancellationToken);

        public ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default) =>
            _raw.DiscardAsync(offset + 512, length, cancellationToken);

        public ValueTask FlushAsync(CancellationToken cancellationToken = default) => _raw.FlushAsync(cancellationToken);

        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            _raw.ReadAsync(offset + 512, buffer, cancellationToken);

        public ValueTask DisposeAsync() => _raw.DisposeAsync();
    }
}
