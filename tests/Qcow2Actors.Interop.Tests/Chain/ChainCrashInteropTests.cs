using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Chain;

/// <summary>
/// q2a rebase and q2a commit SIGKILLed part way (at a test hold: after N bytes written, or after
/// the last write before the images are closed), then recovered: the top image still reads as one
/// of the allowed views (the old one; after rebase's header write, the new one, which is the same
/// content), and every image of the chain is qemu-img check clean.
/// </summary>
public sealed class ChainCrashInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Starts q2a with Q2A_TEST_HOLD, waits for its hold line, SIGKILLs it.</summary>
    private static void KillAtHold(string hold, params string[] args)
    {
        using var held = HeldQ2a.Start(hold, args);
        held.Kill();
    }

    private static void Recover(params string[] images)
    {
        foreach (var image in images)
        {
            if (File.Exists(image + ".journal")) QemuTools.Q2a("recover", image).EnsureSuccess();
            ChainImages.AssertCheckClean(image);
        }
    }

    [QemuTheory]
    [InlineData("copied:65536")]
    [InlineData("end")]
    public void A_rebase_killed_part_way_leaves_the_image_reading_as_before(string hold)
    {
        string dir = _dir.Path;
        ChainImages.Make(dir, mib: 16);
        string top = Path.Combine(dir, ChainImages.Top), mid = Path.Combine(dir, ChainImages.Mid), bas = Path.Combine(dir, ChainImages.Base);
        var before = ChainImages.View(top, "before.raw");
        KillAtHold(hold, "rebase", "-b", ChainImages.Base, "-F", "qcow2", top);
        Recover(top, mid, bas);
        ChainImages.AssertSameContent(top, before);
        // Killed after the one header write, the new name is there; before it, the old one.
        Assert.Equal(hold == "end" ? (ChainImages.Base, "qcow2") : (ChainImages.Mid, "qcow2"), ChainImages.Backing(top));
        // Completing the rebase afterwards still works and still keeps the content.
        QemuTools.Q2a("rebase", "-b", ChainImages.Base, "-F", "qcow2", top).EnsureSuccess();
        ChainImages.AssertSameContent(top, before);
    }

    [QemuTheory]
    [InlineData("copied:65536")]
    [InlineData("end")]
    public void A_commit_killed_part_way_leaves_the_top_reading_as_before(string hold)
    {
        string dir = _dir.Path;
        ChainImages.Make(dir, mib: 16);
        string top = Path.Combine(dir, ChainImages.Top), mid = Path.Combine(dir, ChainImages.Mid), bas = Path.Combine(dir, ChainImages.Base);
        var before = ChainImages.View(top, "before.raw");
        KillAtHold(hold, "commit", top);
        Recover(top, mid, bas);
        ChainImages.AssertSameContent(top, before);
        // Run again to the end: the mid image then holds the top's view on its own.
        QemuTools.Q2a("commit", top).EnsureSuccess();
        ChainImages.AssertSameContent(top, before);
        ChainImages.AssertSameContent(mid, before);
        ChainImages.AssertCheckClean(top);
    }
}
