using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Chaos.Processes;
using Qcow2Actors.Chaos.Workloads;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Check;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Chaos.PowerLoss;

/// <summary>
/// One worker's recovery bench: its state device and buffers, reused from state to state. Each
/// state is opened read-write by the shared engine (journal replay), read whole and checked against
/// the model (every flushed write there), closed cleanly (no journal left), and checked by the
/// engine's own checker (no corruption, no leak); a sample also by <c>qemu-img check</c>.
/// </summary>
internal sealed class StateRecovery(ImageHost host, string directory)
{
    private static readonly TimeSpan StateTimeout = TimeSpan.FromSeconds(60);
    private byte[] _guest = [];
    private long _counter;

    public StateDevice Device { get; } = new("power-loss-state");

    /// <summary>Recovers the state now in <see cref="Device"/>; null when it passed, else (stage, message).</summary>
    public async Task<(string Stage, string Message)?> RecoverAsync(CrashState state, bool qemuCheck, CancellationToken cancellationToken)
    {
        // A fresh name per state: nothing of the previous state (journal actor, cached file) can leak into this one.
        var path = Path.Combine(directory, $"s{++_counter}.qcow2");
        var journal = path + ".journal";
        if (state.Journal is not null) await File.WriteAllBytesAsync(journal, state.Journal, cancellationToken).ConfigureAwait(false);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(StateTimeout);
        try
        {
            return await RecoverAsync(state, path, qemuCheck, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return ("timeout", $"recovery took more than {StateTimeout.TotalSeconds:F0} s");
        }
        finally
        {
            File.Delete(journal);
        }
    }

    private async Task<(string Stage, string Message)?> RecoverAsync(CrashState state, string path, bool qemuCheck, CancellationToken ct)
    {
        var device = Device;
        Qcow2Image image;
        try
        {
            image = await host.OpenAsync(path, new Qcow2OpenOptions
            {
                ReadOnly = false,
                Format = "qcow2",
                DeviceFactory = (p, writable) => Path.GetFullPath(p) == path
                    ? new SharedDeviceHandle(device, readOnly: !writable)
                    : ResilientBlockDevice.OpenFile(p, writable),
            }, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return ("open", $"read-write open (replay) failed: {e.GetType().Name}: {OneLine(e.Message)}");
        }
        try
        {
            if (image.IsReadOnly) return ("open", $"recovered image is read-only: {image.ReadOnlyReason}");
            if (image.VirtualSize != state.Model.Size) return ("verify", $"recovered disk is {image.VirtualSize} bytes, the model {state.Model.Size}");
            if (_guest.Length != state.Model.Size) _guest = new byte[state.Model.Size];
            await image.ReadAsync(0, _guest, ct).ConfigureAwait(false);
            var verdict = CrashVerifier.Verify(state.Model, _guest);
            if (!verdict.Ok) return ("verify", verdict.Message);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return ("verify", $"reading the recovered image failed: {e.GetType().Name}: {OneLine(e.Message)}");
        }
        finally
        {
            try
            {
                await image.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The journal and check stages below show what a failed close left.
                _ = e;
            }
        }

        if (File.Exists(path + ".journal")) return ("close", "the journal is still there after a clean close");
        var check = ImageChecker.Check(device, path);
        if (check.ExitCode != 0)
            return ("check", $"engine check after recovery: {check.Corruptions} corruptions, {check.Leaks} leaks, {check.CheckErrors} errors{(check.AbortReason is { } r ? $" ({r})" : "")}: {OneLine(string.Join("; ", check.Messages.Take(3)))}");
        if (qemuCheck)
        {
            var sample = path + ".sample.qcow2";
            await File.WriteAllBytesAsync(sample, device.Content.ToArray(), ct).ConfigureAwait(false);
            try
            {
                var qemu = await QemuImg.CheckAsync(sample, ct).ConfigureAwait(false);
                if (qemu.ExitCode != 0) return ("qemu-check", $"qemu-img check after recovery exited {qemu.ExitCode}: {OneLine(qemu.OneLine())}");
            }
            finally
            {
                File.Delete(sample);
            }
        }
        return null;
    }

    private static string OneLine(string text)
    {
        var line = text.ReplaceLineEndings(" ").Trim();
        return line.Length <= 400 ? line : line[..400] + "...";
    }
}
