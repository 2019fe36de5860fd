using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// What the per-table actors promise, seen through <see cref="Qcow2Image"/>: one table's
/// mapping changes run one at a time in the order they were issued, so overlapping
/// allocating writes land like a model; different tables do not wait for each other.
/// </summary>
public sealed class L2TableBehaviourTests : HostedImageTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    private void AssertQemuAgrees(string path, byte[] model)
    {
        QemuTools.AssertCheckClean(path);
        var raw = Dir.File($"{Path.GetFileName(path)}.raw");
        File.WriteAllBytes(raw, model);
        var cmp = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", path, raw);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
    }

    // Concurrent overlapping writes have no order, as on any disk (NBD and virtio allow either
    // outcome): every byte must hold the value of one of the writes that covered it, reads
    // must agree with QEMU, and the allocations they raced for must leave a clean image.
    [QemuTheory]
    [InlineData(4096, false)]
    [InlineData(65536, false)]
    [InlineData(65536, true)]
    public async Task Overlapping_concurrent_allocating_writes_to_one_cluster_each_land_whole_bytes_from_one_writer(int clusterSize, bool extendedL2)
    {
        var path = Dir.File($"overlap-{clusterSize}-{extendedL2}.qcow2");
        var model = new byte[8L << 20];
        await using (var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = clusterSize, ExtendedL2 = extendedL2 }))
        {
            var rng = new Random(clusterSize + (extendedL2 ? 1 : 0));
            for (int round = 0; round < 24; round++)
            {
                // A fresh, never-written cluster region each round; every write starts before any finishes.
                long region = round * 4L * clusterSize + clusterSize;
                var pending = new List<Task>();
                var writes = new List<(long Offset, byte[] Data)>();
                for (int i = 0; i < 16; i++)
                {
                    int len = rng.Next(1, 2 * clusterSize);
                    long off = region + rng.Next(0, 2 * clusterSize - len + 1);
                    var data = new byte[len];
                    rng.NextBytes(data);
                    pending.Add(image.WriteAsync(off, data).AsTask());
                    writes.Add((off, data));
                }
                await Task.WhenAll(pending).WaitAsync(Timeout);
                var back = new byte[2 * clusterSize];
                await image.ReadAsync(region, back);
                for (int b = 0; b < back.Length; b++)
                {
                    long at = region + b;
                    var candidates = writes.Where(w => at >= w.Offset && at < w.Offset + w.Data.Length).Select(w => w.Data[at - w.Offset]).ToList();
                    if (candidates.Count == 0) Assert.Equal(model[at], back[b]);
                    else Assert.True(candidates.Contains(back[b]), $"offset {at}: 0x{back[b]:X2} was written by none of the {candidates.Count} overlapping writes");
                }
                back.CopyTo(model, region);
            }
        }
        AssertQemuAgrees(path, model);
    }

    /// <summary>A host file whose writes of one marked length wait until released.</summary>
    private sealed class GatedDevice(IBlockDevice inner, int gatedLength, TaskCompletionSource gate, TaskCompletionSource reached) : DelegatingDevice(inner)
    {
        protected override async ValueTask WriteCoreAsync(ReadOnlyMemory<byte> buffer, long offset, CancellationToken cancellationToken)
        {
            if (buffer.Length == gatedLength)
            {
                reached.TrySetResult();
                await gate.Task;
            }
            await Inner.WriteAsync(buffer, offset, cancellationToken);
        }
    }

    [QemuFact]
    public async Task A_write_held_up_in_one_table_does_not_hold_up_other_tables_but_does_its_own()
    {
        const int clusterSize = 512; // one L2 table maps 64 clusters: 32 KiB of guest space
        const int marked = 12_345;   // fresh clusters, zero tail: the data is written as one device write
        var path = Dir.File("tables.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = clusterSize });
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, w) => new GatedDevice(FileBlockDevice.Open(p, w), marked, gate, reached),
        };
        var model = new byte[1 << 20];
        await using (var image = await Host.OpenAsync(path, options))
        {
            var held = new byte[marked];
            new Random(1).NextBytes(held);
            var heldWrite = image.WriteAsync(0, held).AsTask();
            held.CopyTo(model, 0);
            await reached.Task.WaitAsync(Timeout);

            var sameTable = new byte[1000];
            new Random(2).NextBytes(sameTable);
            var sameTableWrite = image.WriteAsync(20_000, sameTable).AsTask();
            sameTable.CopyTo(model, 20_000);

            var others = new List<Task>();
            for (int t = 1; t < 16; t++)
            {
                var data = new byte[3000 + t];
                new Random(10 + t).NextBytes(data);
                others.Add(image.WriteAsync(t * 32_768L + 100, data).AsTask());
                data.CopyTo(model, t * 32_768L + 100);
            }
            await Task.WhenAll(others).WaitAsync(Timeout); // other tables finish while table 0 is held
            Assert.False(heldWrite.IsCompleted);
            Assert.False(sameTableWrite.IsCompleted, "a second mapping change of the held table ran before the first finished");

            gate.SetResult();
            await Task.WhenAll(heldWrite, sameTableWrite).WaitAsync(Timeout);
            var back = new byte[model.Length];
            await image.ReadAsync(0, back);
            Assert.Equal(model, back);
        }
        AssertQemuAgrees(path, model);
    }

    [QemuFact]
    public async Task A_write_spanning_a_whole_l2_table_succeeds_with_64_bit_refcounts()
    {
        // 512-byte clusters, 64-bit refcounts: one L2 table and one refcount block both map 64
        // clusters, so the write asks the refcount actor for a run as long as a block's range.
        var path = Dir.File("whole-table.qcow2");
        var model = new byte[1 << 20];
        await using (var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 512, RefcountBits = 64 }))
        {
            var data = new byte[32_768];
            new Random(3).NextBytes(data);
            await image.WriteAsync(32_768, data).AsTask().WaitAsync(Timeout);
            data.CopyTo(model, 32_768);
            await image.FlushAsync();
        }
        AssertQemuAgrees(path, model);
    }
}
