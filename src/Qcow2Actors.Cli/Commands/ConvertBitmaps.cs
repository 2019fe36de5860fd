using System.CommandLine;
using System.CommandLine.Invocation;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a convert --bitmaps [--skip-broken-bitmaps]</c>: copies the source's persistent bitmaps (name,
/// granularity, enabled state and bits) to a qcow2 target, under qemu-img's rules: a raw or v2 target is
/// refused, an inconsistent (in-use) bitmap stops the conversion before anything is written unless
/// <c>--skip-broken-bitmaps</c> skips it with a warning. Attached to convert by one call, around its action:
/// the checks run first, the copy after the data is converted (the target reopened for writing).
/// </summary>
internal static class ConvertBitmaps
{
    public static void Attach(Command convert, Argument<string> source, Func<ParseResult, string> target, Func<ParseResult, bool> severalSources, Option<string?> format, Option<string> outFormat, Option<string[]> options)
    {
        var bitmaps = new Option<bool>("--bitmaps") { Description = "copy the source's persistent bitmaps to the qcow2 target" };
        var skipBroken = new Option<bool>("--skip-broken-bitmaps") { Description = "with --bitmaps: skip inconsistent bitmaps instead of failing" };
        convert.Options.Add(bitmaps);
        convert.Options.Add(skipBroken);
        var inner = (AsynchronousCommandLineAction)convert.Action!;
        convert.SetAction(async (parse, ct) =>
        {
            bool copy = parse.GetValue(bitmaps), skip = parse.GetValue(skipBroken);
            if (!copy && !skip) return await inner.InvokeAsync(parse, ct).ConfigureAwait(false);
            List<Qcow2Bitmap>? wanted = null;
            int checkedOk = await CliRunner.RunAsync(async () =>
            {
                if (!copy) throw new CliException("Use of --skip-broken-bitmaps requires --bitmaps");
                if (severalSources(parse)) throw new CliException("Copying bitmaps only possible with single source");
                var outFmt = parse.GetValue(outFormat) ?? "raw";
                var opts = string.Join(',', parse.GetValue(options) ?? []);
                if (outFmt != "qcow2" || opts.Split(',').Any(o => o is "compat=0.10" or "compat=v2"))
                    throw new CliException($"Format driver '{outFmt}' does not support bitmaps");
                await using var src = await Qcow2Image.OpenAsync(parse.GetValue(source)!, new Qcow2OpenOptions { Format = parse.GetValue(format) }, ct).ConfigureAwait(false);
                wanted = [];
                // QEMU meets them in reverse directory order; so do its messages.
                foreach (var b in src.Bitmaps.Reverse())
                {
                    if (!b.Inconsistent) { wanted.Insert(0, b); continue; }
                    if (!skip)
                        throw new CliException($"Cannot copy inconsistent bitmap '{b.Name}' Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it");
                    await Console.Error.WriteLineAsync($"q2a: warning: Skipping inconsistent bitmap '{b.Name}'").ConfigureAwait(false);
                }
                return 0;
            }).ConfigureAwait(false);
            if (checkedOk != 0) return checkedOk;
            int rc = await inner.InvokeAsync(parse, ct).ConfigureAwait(false);
            if (rc != 0 || wanted!.Count == 0) return rc;
            return await CliRunner.RunAsync(async () =>
            {
                await using var src = await Qcow2Image.OpenAsync(parse.GetValue(source)!, new Qcow2OpenOptions { Format = parse.GetValue(format) }, ct).ConfigureAwait(false);
                await using var host = ImageHost.Create();
                await using var dst = await host.OpenAsync(target(parse), new Qcow2OpenOptions { ReadOnly = false }, ct).ConfigureAwait(false);
                foreach (var b in wanted)
                {
                    await dst.AddBitmapAsync(b.Name, b.Granularity, b.Enabled, ct).ConfigureAwait(false);
                    await dst.MergeBitmapAsync(b.Name, b.Name, src, ct).ConfigureAwait(false);
                }
                await dst.DisposeAsync().ConfigureAwait(false);
                return 0;
            }).ConfigureAwait(false);
        });
    }
}
