using System.Globalization;
using Qcow2Actors.Samples.Embedding;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Hosting;

/// <summary>
/// samples/Embedding's flow, in process: a generic host with AddQcow2Actors started, an image
/// created, written, read and closed, the host stopped; QEMU then reads what it wrote.
/// </summary>
public sealed class EmbeddingSampleTests : IDisposable
{
    private readonly TempDir _dir = new();

    [QemuFact]
    public async Task The_generic_host_sample_leaves_an_image_qemu_checks_clean_and_reads_back()
    {
        var path = _dir.File("hosted.qcow2");
        using var log = new StringWriter();
        await EmbeddingSample.RunAsync(path, log);

        Assert.Contains("closed clean", log.ToString());
        Assert.False(File.Exists(path + ".journal"), "a clean close leaves no journal beside the image");
        QemuTools.AssertCheckClean(path);
        string Arg(long v) => v.ToString(CultureInfo.InvariantCulture);
        var pattern = QemuTools.QemuIo("-f", "qcow2", "-c",
            $"read -P 0xab {Arg(EmbeddingSample.PatternOffset)} {Arg(EmbeddingSample.PatternLength)}", path);
        Assert.True(pattern.ExitCode == 0, $"qemu-io read -P 0xab: {pattern.StdOut}{pattern.StdErr}");
        var zeros = QemuTools.QemuIo("-f", "qcow2", "-c", $"read -P 0 0 {Arg(EmbeddingSample.PatternOffset)}", path);
        Assert.True(zeros.ExitCode == 0, $"qemu-io read -P 0: {zeros.StdOut}{zeros.StdErr}");
    }

    public void Dispose() => _dir.Dispose();
}
