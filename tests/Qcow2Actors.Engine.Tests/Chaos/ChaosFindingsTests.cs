using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Chaos;

/// <summary>Engine defects found by <c>q2a chaos</c>, pinned as failing tests until the engine is fixed.</summary>
public sealed class ChaosFindingsTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// DESIGN.md: while the journal holds records the header carries the journal-pending bit
    /// "named in the feature name table, so QEMU refuses the image with that name". With 512-byte
    /// clusters ImageCreator.FittingFeatureNames falls back to QEMU's own table (ours does not fit
    /// in cluster 0), so a crashed image is refused as "Unknown incompatible feature:
    /// 8000000000000000" — safe, but nameless. Found by q2a chaos (seeds 1949820435, 418288227).
    /// A fix could drop QEMU's informational compatible/autoclear entries (lazy refcounts, bitmaps,
    /// raw external data) to make room for ours when everything does not fit.
    /// </summary>
    [QemuFact]
    public async Task A_crashed_image_with_512_byte_clusters_is_refused_by_qemu_naming_our_journal_bit()
    {
        var path = _dir.File("small-clusters.qcow2");
        var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s");
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = 512 });
        await image.WriteAsync(4096, new byte[8192].Select(_ => (byte)0x5a).ToArray());
        await image.FlushAsync();
        // The crash: no close, no checkpoint.
        await host.DisposeAsync();

        var check = QemuTools.QemuImg("check", "-f", "qcow2", path);
        Assert.Equal(1, check.ExitCode);
        Assert.Contains("Unsupported qcow2 feature(s): journal pending: run q2a recover", check.StdErr, StringComparison.Ordinal);
    }
}
