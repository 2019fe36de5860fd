using Qcow2Actors.Engine.Amend;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Amend;

/// <summary>
/// Every crash an amend can suffer: the amend runs on a device that records its writes between
/// flushes, and every state a crash could leave (<see cref="RecordingDevice.CrashStates"/>) must be
/// check-clean with no leak at all and read exactly as the image did before.
/// </summary>
public sealed class ImageAmenderCrashTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string QemuImage(string options, params string[] io)
    {
        var path = _dir.File($"i{Guid.NewGuid():N}.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", "-o", options, path, "8M").EnsureSuccess();
        QemuTools.QemuIo([.. io.SelectMany(c => new[] { "-c", c }), path]).EnsureSuccess();
        return path;
    }

    private void AssertEveryCrashStateIsCleanAndReadsTheSame(string original, RecordingDevice recorded)
    {
        int n = 0;
        string state = _dir.File("state.qcow2");
        foreach (var bytes in RecordingDevice.CrashStates(File.ReadAllBytes(original), recorded))
        {
            var result = ImageChecker.Check(new MemoryBlockDevice(bytes), $"crash state {n}");
            Assert.True(result.AbortReason is null && result.CheckErrors == 0 && result.Corruptions == 0 && result.Leaks == 0,
                $"crash state {n}: {string.Join("; ", result.Messages)}");
            File.WriteAllBytes(state, bytes);
            var compare = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "qcow2", original, state);
            Assert.True(compare.ExitCode == 0, $"crash state {n}: {compare.StdOut}{compare.StdErr}");
            n++;
        }
        Assert.True(n > 3, "the amend flushed fewer times than its ordering needs");
    }

    [QemuTheory]
    [InlineData("refcount_bits=16", 64)]
    [InlineData("refcount_bits=16", 1)]
    [InlineData("refcount_bits=64,cluster_size=4096", 8)]
    public void Every_crash_while_the_refcount_width_changes_leaves_a_clean_image_that_reads_the_same(string options, int bits)
    {
        var path = QemuImage(options, "write -P 1 0 1M", "write -c -P 2 2M 64k", "write -z 3M 64k");
        var device = new RecordingDevice(new MemoryBlockDevice(File.ReadAllBytes(path)));
        ImageAmender.Amend(device, new AmendOptions { RefcountBits = bits });
        Assert.Equal(bits, Format.ImageHeaderBlock.Read(device.ToArray()).Header.RefcountBits);
        AssertEveryCrashStateIsCleanAndReadsTheSame(path, device);
    }

    [QemuFact]
    public void Every_crash_while_zero_clusters_are_expanded_for_compat_0_10_leaves_a_clean_image_that_reads_the_same()
    {
        var path = QemuImage("compat=1.1", "write -P 1 0 1M", "write -z 64k 64k", "write -z 2M 1M");
        var device = new RecordingDevice(new MemoryBlockDevice(File.ReadAllBytes(path)));
        ImageAmender.Amend(device, new AmendOptions { Version = 2 });
        Assert.Equal(2, Format.ImageHeaderBlock.Read(device.ToArray()).Header.Version);
        AssertEveryCrashStateIsCleanAndReadsTheSame(path, device);
    }

    [QemuTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Every_crash_during_a_shrink_leaves_at_most_leaks(bool snapshot)
    {
        var path = QemuImage("compat=1.1", "write -P 1 0 1M", "write -c -P 2 3M 64k", "write -P 3 6M 1M");
        if (snapshot) QemuTools.QemuImg("snapshot", "-c", "s1", path).EnsureSuccess();
        var initial = File.ReadAllBytes(path);
        var device = new RecordingDevice(new MemoryBlockDevice(initial));
        ImageShrinker.Shrink(device, 3200 * 1024);
        var final = ImageChecker.Check(new MemoryBlockDevice(device.ToArray()), "final");
        Assert.True(final.Corruptions == 0 && final.Leaks == 0 && final.CheckErrors == 0, string.Join("; ", final.Messages));
        int n = 0;
        foreach (var bytes in RecordingDevice.CrashStates(initial, device))
        {
            var result = ImageChecker.Check(new MemoryBlockDevice(bytes), $"crash state {n}");
            Assert.True(result.AbortReason is null && result.CheckErrors == 0 && result.Corruptions == 0, $"crash state {n}: {string.Join("; ", result.Messages)}");
            n++;
        }
    }

    [QemuFact]
    public void A_refusal_writes_nothing()
    {
        var path = QemuImage("compat=1.1", "write -P 1 0 64k");
        QemuTools.QemuImg("snapshot", "-c", "s1", path).EnsureSuccess();
        var device = new RecordingDevice(new MemoryBlockDevice(File.ReadAllBytes(path)));
        var ex = Assert.Throws<ImageAmendException>(() => ImageAmender.Amend(device, new AmendOptions { RefcountBits = 1 }));
        Assert.StartsWith("Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ImageAmendException>(() => ImageAmender.Amend(device, new AmendOptions { Version = 2, RefcountBits = 8 }));
        Assert.Empty(device.Writes);
    }
}
