using System.Text.Json;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Freed clusters go back to the host: once the journal record that took a cluster's refcount
/// to 0 is durable (never before), its range in the image file is punched out.
/// </summary>
public sealed class HolePunchTests : IDisposable
{
    private const int ClusterSize = 65536;
    private const string Hocon = "qcow2actors.engine.checkpoint-interval = 0s";
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuFact]
    public async Task Discarding_most_of_a_filled_image_leaves_the_host_file_about_as_big_as_its_allocated_clusters()
    {
        var path = _dir.File("fill.qcow2");
        const long size = 128 << 20;
        const int filled = 96 << 20;
        var chunk = new byte[1 << 20];
        await using (var host = ImageHost.Create(Hocon))
        await using (var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = size, ClusterSize = ClusterSize }))
        {
            for (int mib = 0; mib < filled >> 20; mib++)
            {
                Array.Fill(chunk, (byte)(mib + 1));
                await image.WriteAsync((long)mib << 20, chunk);
            }
            await image.FlushAsync();
            long full = HostFile.AllocatedBytes(path);
            Assert.True(full >= filled, $"the filled image occupies only {full} bytes");
            // Discard 80 MiB, zero 8 MiB with unmap; 8 MiB of data stays (MiB 88..95).
            await image.DiscardAsync(0, 80 << 20);
            await image.WriteZeroesAsync(80 << 20, 8 << 20, unmap: true);
            await image.FlushAsync();
        }

        QemuTools.AssertCheckClean(path);
        var check = QemuTools.QemuImg("check", "--output", "json", path);
        using var json = JsonDocument.Parse(check.StdOut);
        long allocatedClusters = json.RootElement.GetProperty("allocated-clusters").GetInt64();
        Assert.Equal(8 << 20, allocatedClusters * ClusterSize);
        long onHost = HostFile.AllocatedBytes(path);
        // Metadata of a 128 MiB image: header, L1, refcount table and block, one L2 table.
        long expected = allocatedClusters * ClusterSize + 8 * ClusterSize;
        Assert.True(onHost <= expected * 105 / 100, $"the host file occupies {onHost} bytes; allocated clusters and metadata come to {expected}");
        for (int mib = 88; mib < filled >> 20; mib++)
        {
            var read = QemuTools.QemuIo("-c", $"read -P {mib + 1} {mib}M 1M", path);
            Assert.True(read.ExitCode == 0 && !read.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), read.StdOut + read.StdErr);
        }
        var zeros = QemuTools.QemuIo("-c", "read -P 0 0 88M", path);
        Assert.True(zeros.ExitCode == 0 && !zeros.StdOut.Contains("fail", StringComparison.OrdinalIgnoreCase), zeros.StdOut + zeros.StdErr);
    }

    [Fact]
    public async Task A_freed_cluster_is_punched_only_after_the_record_that_freed_it_is_durable()
    {
        var path = _dir.File("order.qcow2");
        var journal = path + ".journal";
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 8 << 20, ClusterSize = ClusterSize });
        var punches = new List<(long Offset, long Length, long JournalLength)>();
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, w) => new PunchRecordingDevice(FileBlockDevice.Open(p, w), journal, punches),
        };
        await using var host = ImageHost.Create(Hocon);
        await using var image = await host.OpenAsync(path, options);
        await image.WriteAsync(0, Enumerable.Repeat((byte)0x5a, 512 << 10).ToArray());
        await image.FlushAsync();
        var hostOffsets = new List<long>();
        await foreach (var extent in image.GetMapAsync(0, 512 << 10))
            for (long o = 0; o < extent.Length; o += ClusterSize) hostOffsets.Add(extent.Offset!.Value + o);

        await image.DiscardAsync(0, 512 << 10);
        long journalBeforeFlush = new FileInfo(journal).Length;
        lock (punches) Assert.Empty(punches);

        await image.FlushAsync();
        // The checkpoint reaches the refcount actor after the release that the flush triggered: a barrier.
        await image.CheckpointAsync();
        lock (punches)
        {
            Assert.Equal(hostOffsets.Order(), punches.SelectMany(p => Enumerable.Range(0, (int)(p.Length / ClusterSize)).Select(k => p.Offset + (long)k * ClusterSize)).Order());
            Assert.All(punches, p => Assert.True(p.JournalLength > journalBeforeFlush,
                $"hole at {p.Offset} punched while the journal ({p.JournalLength} bytes) did not yet hold the discard"));
        }
        var back = new byte[512 << 10];
        await image.ReadAsync(0, back);
        Assert.True(back.AsSpan().IndexOfAnyExcept((byte)0) < 0);
    }

    /// <summary>Records each punch with the journal file's length at that moment (it grows only when a batch is durable).</summary>
    private sealed class PunchRecordingDevice(IBlockDevice inner, string journal, List<(long, long, long)> punches) : DelegatingDevice(inner)
    {
        public override void PunchHole(long offset, long length)
        {
            long journalLength = File.Exists(journal) ? new FileInfo(journal).Length : 0;
            lock (punches) punches.Add((offset, length, journalLength));
            base.PunchHole(offset, length);
        }
    }
}
