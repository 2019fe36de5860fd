using Qcow2Actors.Chaos.Processes;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Chaos.Qcow2;

/// <summary>The verdict on one crashed image, stage by stage.</summary>
/// <param name="Ok">True when every stage passed.</param>
/// <param name="Stage">The stage that failed ("precheck", "read-only", "open", "verify", "close", "check", "qemu-read"), or "ok".</param>
/// <param name="Message">One line: what the failing stage saw, or a summary of the passing run.</param>
/// <param name="RefusedByQemu">True when qemu-img refused the crashed image naming our journal-pending feature (false: it found it clean).</param>
public sealed record RecoveryVerdict(bool Ok, string Stage, string Message, bool RefusedByQemu)
{
    /// <inheritdoc />
    public override string ToString() => Ok ? Message : $"{Stage}: {Message}";
}

/// <summary>
/// What every crashed image must go through, for the in-process crash tests and <c>q2a chaos</c>
/// alike: qemu-img either refuses it by our feature name or finds it consistent; a journal-pending
/// image reads read-only (writing nothing) exactly as it reads once recovered; our read-write
/// open replays the journal; every flushed write is there (<see cref="CrashVerifier"/>); a clean
/// close leaves a plain qcow2 that <c>qemu-img check</c> passes with no errors and no leaks, no
/// journal file beside it, and that QEMU reads byte for byte as we did.
/// </summary>
public static class ChaosRecovery
{
    /// <summary>The feature name our journal-pending bit carries in the feature name table.</summary>
    public const string JournalPendingFeatureName = Qcow2Actors.Format.FeatureNameTable.JournalPendingName;

    /// <summary>Runs every stage on <paramref name="path"/> (and its <c>.journal</c>) with <paramref name="host"/>.</summary>
    public static async Task<RecoveryVerdict> RecoverAndVerifyAsync(ImageHost host, string path, DiskModel model, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(model);
        var pre = await QemuImg.CheckAsync(path, cancellationToken).ConfigureAwait(false);
        var refused = pre.ExitCode != 0;
        if (refused && !(pre.ExitCode == 1 && pre.StandardError.Contains(JournalPendingFeatureName, StringComparison.Ordinal)))
            return new RecoveryVerdict(false, "precheck",
                $"qemu-img check of the crashed image exited {pre.ExitCode} without naming '{JournalPendingFeatureName}': {Tail(pre.OneLine())}", refused);

        // A journal-pending image must read, read-only, as recovery will leave it, and that read writes nothing.
        byte[]? pendingView = null;
        if (PendingJournal.IsPending(path))
        {
            var before = await FileBytesAsync(path, cancellationToken).ConfigureAwait(false);
            var journalBefore = await FileBytesAsync(path + ".journal", cancellationToken).ConfigureAwait(false);
            try
            {
                await using var view = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = true, Format = "qcow2" }, cancellationToken).ConfigureAwait(false);
                pendingView = new byte[view.VirtualSize];
                await view.ReadAsync(0, pendingView, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                return new RecoveryVerdict(false, "read-only", $"read-only open of the pending image failed: {e.GetType().Name}: {OneLine(e.Message)}", refused);
            }
            var after = await FileBytesAsync(path, cancellationToken).ConfigureAwait(false);
            var journalAfter = await FileBytesAsync(path + ".journal", cancellationToken).ConfigureAwait(false);
            if (!before.AsSpan().SequenceEqual(after) || !journalBefore.AsSpan().SequenceEqual(journalAfter))
                return new RecoveryVerdict(false, "read-only", "the read-only open changed the image or its journal", refused);
        }

        byte[] ours;
        Qcow2Image image;
        try
        {
            image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, Format = "qcow2" }, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return new RecoveryVerdict(false, "open", $"read-write open (replay) failed: {e.GetType().Name}: {OneLine(e.Message)}", refused);
        }
        try
        {
            if (image.IsReadOnly)
                return new RecoveryVerdict(false, "open", $"recovered image is read-only: {image.ReadOnlyReason}", refused);
            ours = new byte[model.Size];
            if (image.VirtualSize != model.Size)
                return new RecoveryVerdict(false, "verify", $"recovered disk is {image.VirtualSize} bytes, the model {model.Size}", refused);
            await using (var target = new Qcow2ChaosTarget(image, ownsImage: false))
            {
                const int chunk = 1024 * 1024;
                for (var offset = 0; offset < ours.Length; offset += chunk)
                    await target.ReadAsync(offset, ours.AsMemory(offset, Math.Min(chunk, ours.Length - offset)), cancellationToken).ConfigureAwait(false);
            }
            var verdict = CrashVerifier.Verify(model, ours);
            if (!verdict.Ok) return new RecoveryVerdict(false, "verify", verdict.Message, refused);
            if (pendingView is not null && ours.AsSpan().CommonPrefixLength(pendingView) is var same && same < ours.Length)
                return new RecoveryVerdict(false, "read-only",
                    $"read-only before recovery read 0x{(same < pendingView.Length ? pendingView[same] : 0):x2} at offset {same} (0x{same:x}) where the recovered image reads 0x{ours[same]:x2}", refused);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return new RecoveryVerdict(false, "verify", $"reading the recovered image failed: {e.GetType().Name}: {OneLine(e.Message)}", refused);
        }
        finally
        {
            try
            {
                await image.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // Reported below as a close failure by the journal/check stages; keep the first failure's message.
                _ = e;
            }
        }

        if (File.Exists(path + ".journal"))
            return new RecoveryVerdict(false, "close", $"'{path}.journal' is still there after a clean close", refused);
        var post = await QemuImg.CheckAsync(path, cancellationToken).ConfigureAwait(false);
        if (post.ExitCode != 0)
            return new RecoveryVerdict(false, "check", $"qemu-img check after recovery exited {post.ExitCode}: {Tail(post.OneLine())}", refused);

        var theirs = await QemuImg.ReadGuestAsync(path, cancellationToken).ConfigureAwait(false);
        if (theirs.Length != ours.Length)
            return new RecoveryVerdict(false, "qemu-read", $"qemu reads {theirs.Length} guest bytes, we read {ours.Length}", refused);
        var diff = ours.AsSpan().CommonPrefixLength(theirs);
        if (diff < ours.Length)
            return new RecoveryVerdict(false, "qemu-read",
                $"after close qemu reads 0x{theirs[diff]:x2} at offset {diff} (0x{diff:x}) where our recovered image read 0x{ours[diff]:x2}", refused);
        var how = !refused ? "qemu found it clean" : "qemu refused it (journal pending)";
        return new RecoveryVerdict(true, "ok", how + "; recovered, verified, clean", refused);
    }


    private static async Task<byte[]> FileBytesAsync(string path, CancellationToken cancellationToken) =>
        File.Exists(path) ? await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false) : [];

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    private static string Tail(string text) => text.Length <= 400 ? text : "..." + text[^400..];
}
