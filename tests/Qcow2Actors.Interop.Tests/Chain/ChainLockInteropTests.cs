using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Chain;

/// <summary>
/// q2a commit holds the top image's write lock from start to end: stopped at each point of the
/// commit (copying, base written and closed, top emptied), a qemu-io writer on the top is refused
/// by QEMU's lock, so no write can land that the emptying would discard uncommitted. q2a dd holds
/// a raw output's write lock from its creation to the end the same way.
/// </summary>
public sealed class ChainLockInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [QemuTheory]
    [InlineData("copied:65536")]
    [InlineData("at:committed")]
    [InlineData("end")]
    public void A_second_writer_on_the_top_is_refused_at_every_point_of_a_commit(string hold)
    {
        string dir = _dir.Path;
        ChainImages.Make(dir);
        string top = Path.Combine(dir, ChainImages.Top);
        using var held = HeldQ2a.Start(hold, "commit", top);
        var write = QemuTools.QemuIo("-c", "write -P 0x77 0 4k", top);
        Assert.True(write.ExitCode != 0, $"qemu-io wrote the top while q2a commit held it: {write.StdOut}");
        Assert.Contains("Failed to get \"write\" lock", write.StdErr, StringComparison.Ordinal);
        Assert.Contains($"[{top}]", write.StdErr, StringComparison.Ordinal);
    }

    [QemuTheory]
    [InlineData("copied:65536")]
    [InlineData("end")]
    public void A_second_writer_on_a_raw_dd_output_is_refused_while_dd_runs(string hold)
    {
        string dir = _dir.Path;
        ChainImages.Make(dir);
        string top = Path.Combine(dir, ChainImages.Top), output = Path.Combine(dir, "dd.raw");
        using (var held = HeldQ2a.Start(hold, "dd", "bs=64k", $"if={top}", $"of={output}"))
        {
            var write = QemuTools.QemuIo("-f", "raw", "-c", "write -P 0x77 0 4k", output);
            Assert.True(write.ExitCode != 0, $"qemu-io wrote the dd output while q2a dd held it: {write.StdOut}");
            Assert.Contains("Failed to get \"write\" lock", write.StdErr, StringComparison.Ordinal);
        }
        // Run to the end, the output is the whole image (and replaces what the killed run left).
        QemuTools.Q2a("dd", "bs=64k", $"if={top}", $"of={output}").EnsureSuccess();
        var cmp = QemuTools.QemuImg("compare", "-U", "-F", "raw", top, output);
        Assert.True(cmp.ExitCode == 0, $"qemu-img compare: {cmp.StdOut}{cmp.StdErr}");
        Assert.Equal(4L * 1024 * 1024, new FileInfo(output).Length);
    }
}
