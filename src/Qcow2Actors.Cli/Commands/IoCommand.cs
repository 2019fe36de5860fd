using Qcow2Actors.Engine.Device;
using System.CommandLine;
using System.Diagnostics;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a io [-f FMT] [-r] -c CMD [-c CMD ...] IMG</c>: qemu-io's non-interactive mode. The
/// image opens read-write unless <c>-r</c>; the commands run in order (see
/// <see cref="IoInterpreter"/>); the image is closed cleanly at the end, except after
/// <c>abort</c>, which kills the process on the spot so nothing is flushed or checkpointed —
/// the crash a recovery test needs.
/// </summary>
internal static class IoCommand
{
    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "image format (qcow2 or raw); probed when absent" };
        var readOnly = new Option<bool>("-r") { Description = "open the image read-only" };
        var forceShare = ForceShareOption.Create();
        var commands = new Option<string[]>("-c") { Description = "a qemu-io command, e.g. 'write -P 0xab 0 64k'; repeatable" };
        var path = new Argument<string>("filename");
        var command = new Command("io", "Run qemu-io commands (read, write, discard, flush, abort) against an image")
            { format, readOnly, forceShare, commands, path };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() => RunAsync(sources.Resolve(parse, parse.GetValue(path)!, parse.GetValue(format)),
            parse.GetValue(readOnly), parse.GetValue(commands) ?? [], Console.Out, Console.Error, ct, parse.GetValue(forceShare))));
        return command;
    }

    public static Task<int> RunAsync(string path, string? format, bool readOnly, IReadOnlyList<string> commands,
        TextWriter stdout, TextWriter stderr, CancellationToken ct, bool forceShare = false) =>
        RunAsync(Sources.ImageSpec.Resolve(path, false, format, Sources.SourceObjects.Empty), readOnly, commands, stdout, stderr, ct, forceShare);

    public static async Task<int> RunAsync(Sources.ImageSpec spec, bool readOnly, IReadOnlyList<string> commands,
        TextWriter stdout, TextWriter stderr, CancellationToken ct, bool forceShare = false)
    {
        string path = spec.Argument;
        IIoTarget target;
        try
        {
            if (forceShare && !readOnly)
                throw new ArgumentException("force-share=on can only be used with read-only images");
            target = await Sources.IoSource.OpenAsync(spec, readOnly, forceShare, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException and not OutOfMemoryException)
        {
            // qemu-io words an NBD failure "can't open device X: REASON", without qemu-img's "Could not open 'X': ".
            string reason = ex is ImageLockException l ? l.Reason : ex.Message;
            string prefix = $"Could not open '{path}': ";
            if (!spec.IsHostFile && reason.StartsWith(prefix, StringComparison.Ordinal)) reason = reason[prefix.Length..];
            throw new CliException($"can't open device {path}: {reason}", ex);
        }
        await using (target.ConfigureAwait(false))
        {
            var interpreter = new IoInterpreter(target, stdout, stderr, KillSelf);
            return await interpreter.RunAsync(commands, ct).ConfigureAwait(false);
        }
    }

    // SIGKILL to ourselves: no finally blocks, no DisposeAsync, no flush — what a power cut leaves.
    private static ValueTask KillSelf()
    {
        using var self = Process.GetCurrentProcess();
        self.Kill();
        return ValueTask.CompletedTask;
    }
}
