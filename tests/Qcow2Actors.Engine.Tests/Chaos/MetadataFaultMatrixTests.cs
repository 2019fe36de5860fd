using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Chaos;

/// <summary>
/// The qemu-iotests 026 matrix for our engine: EIO and ENOSPC, once and persistent, at every named
/// metadata event (<see cref="MetadataEvent"/>, fired through the engine's <see cref="MetadataEvents"/>
/// seam right before the event's I/O). A fixed workload that passes every event runs with the fault
/// armed; each step either succeeds or fails with an <see cref="IOException"/> (no hang, no other
/// exception); then, the fault removed, a fresh engine recovers the image: every write a successful
/// flush covered reads back, and our checker and qemu-img check find it clean.
/// </summary>
public sealed class MetadataFaultMatrixTests
{
    private const int Eio = 5;
    private const int Enospc = 28;
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);

    // Event names, not the internal enum: a public test method cannot take an internal type.
    public static TheoryData<string, int, bool> Matrix()
    {
        var data = new TheoryData<string, int, bool>();
        foreach (var e in Enum.GetNames<MetadataEvent>())
            foreach (var errno in new[] { Eio, Enospc })
                foreach (var persistent in new[] { false, true })
                    data.Add(e, errno, persistent);
        return data;
    }

    [QemuTheory]
    [MemberData(nameof(Matrix))]
    public async Task A_fault_at_a_metadata_event_fails_typed_loses_nothing_flushed_and_recovers_clean(string eventName, int errno, bool persistent)
    {
        var at = Enum.Parse<MetadataEvent>(eventName);
        using var dir = new TempDir();
        var backing = dir.File("backing.raw");
        var backingBytes = Pattern(4 << 20, 0x11);
        await File.WriteAllBytesAsync(backing, backingBytes);
        var path = dir.File("image.qcow2");
        // 512-byte clusters with 64-bit refcounts: a 2.5 MiB write needs new L2 tables, new refcount
        // blocks and a bigger refcount table; growing the disk to 64 MiB needs a bigger L1.
        ImageCreator.Create(path, new Qcow2CreateOptions
        {
            Size = 4 << 20, ClusterSize = 512, RefcountBits = 64, BackingFile = backing, BackingFormat = "raw",
        });
        var durable = new List<(long Offset, byte[] Data)>();
        var unflushed = new List<(long Offset, byte[] Data)>();
        var failures = new List<string>();

        var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s\nqcow2actors.engine.checkpoint-records = 1000000", "fault-matrix");
        var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
        // Before the fault: data a flush made durable.
        var baseline = Pattern(4096, 0x21);
        await image.WriteAsync(8192, baseline);
        await image.FlushAsync();
        durable.Add((8192, baseline));

        var hits = 0;
        var armed = true;
        var fault = MetadataEvents.Inject((e, file) =>
        {
            if (e != at || !file.StartsWith(dir.Path, StringComparison.Ordinal)) return null;
            var n = Interlocked.Increment(ref hits);
            if (!Volatile.Read(ref armed) || (!persistent && n > 1)) return null;
            return new IOException($"injected errno {errno} at {e}") { HResult = errno };
        });
        try
        {
            async Task Step(string name, Func<Task> step)
            {
                try
                {
                    await step().WaitAsync(StepTimeout);
                }
                catch (TimeoutException)
                {
                    Assert.Fail($"{name} hung with a fault at {at}");
                }
                catch (IOException e)
                {
                    failures.Add($"{name}: {e.GetType().Name}: {e.Message}");
                }
                catch (Exception e)
                {
                    Assert.Fail($"{name} failed with {e.GetType().Name} (not an IOException) with a fault at {at}: {e}");
                }
            }

            async Task Write(long offset, byte[] data)
            {
                await image.WriteAsync(offset, data);
                unflushed.Add((offset, data));
            }

            async Task Flush()
            {
                await image.FlushAsync();
                durable.AddRange(unflushed);
                unflushed.Clear();
            }

            // A partial-cluster write over the backing file copies the rest of the clusters (COW read).
            await Step("cow write", () => Write(1000, Pattern(100, 0x31)));
            await Step("big write", () => Write(512 * 1024, Pattern(2560 * 1024, 0x41)));
            await Step("flush", Flush);
            await Step("resize", async () => await image.ResizeAsync(64 << 20));
            await Step("flush after resize", Flush);
            await Step("snapshot", async () => await image.CreateSnapshotAsync("s1"));
            await Step("checkpoint", async () => await image.CheckpointAsync());
            await Step("write after checkpoint", () => Write(16384, Pattern(4096, 0x51)));
            await Step("flush after checkpoint", Flush);
            await Step("close", async () => await image.DisposeAsync());
        }
        finally
        {
            Volatile.Write(ref armed, false);
            fault.Dispose();
            await host.DisposeAsync();
        }
        Assert.True(hits > 0, $"the workload never reached {at}");
        Assert.True(failures.Count > 0, $"a fault at {at} failed nothing");

        // The fault is gone: a fresh engine replays and everything flushed is there.
        await using (var recovery = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s", "fault-matrix-recovery"))
        {
            var recovered = await recovery.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
            await using (recovered)
            {
                Assert.False(recovered.IsReadOnly, recovered.ReadOnlyReason);
                foreach (var (offset, data) in durable)
                {
                    var back = new byte[data.Length];
                    await recovered.ReadAsync(offset, back);
                    Assert.True(back.AsSpan().SequenceEqual(data),
                        $"flushed data at {offset} (+{data.Length}) lost after a fault at {at}; failures: {string.Join(" | ", failures)}");
                }
            }
        }
        var check = ImageChecker.CheckFile(path);
        Assert.True(check.ExitCode == 0, $"engine check after a fault at {at}: {check.Corruptions} corruptions, {check.Leaks} leaks: {string.Join("; ", check.Messages.Take(3))}");
        QemuTools.AssertCheckClean(path);
    }

    private static byte[] Pattern(int length, byte seed)
    {
        var bytes = new byte[length];
        for (var i = 0; i < length; i++) bytes[i] = (byte)(seed + i * 7 + (i >> 9));
        return bytes;
    }
}
