using System.CommandLine;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]]
/// [-g GRANULARITY] [-f FMT] FILENAME BITMAP</c>: edits the persistent dirty bitmaps of a qcow2 image as
/// qemu-img bitmap does, the actions in command-line order, holding the image's write lock throughout.
/// The work is the engine's (<see cref="Qcow2Image.AddBitmapAsync"/> and its siblings).
/// </summary>
internal static class BitmapCommand
{
    private static readonly string[] ActionNames = ["--add", "--remove", "--clear", "--enable", "--disable", "--merge"];

    /// <summary>
    /// What the command line asks for, checked as qemu-img checks it before opening anything: the
    /// actions in command-line order (with --merge's SOURCE), the granularity (null: the default),
    /// the image and the bitmap.
    /// </summary>
    /// <exception cref="CliException">qemu-img's line for what is wrong.</exception>
    internal static (List<(string Op, string? Source)> Actions, long? Granularity, string Path, string Name) Plan(ParseResult parse)
    {
        // The actions run in the order given, as qemu-img runs them.
        var actions = new List<(string Op, string? Source)>();
        var tokens = parse.Tokens;
        for (int i = 0; i < tokens.Count; i++)
        {
            if (Array.IndexOf(ActionNames, tokens[i].Value) < 0 || tokens[i].Type != System.CommandLine.Parsing.TokenType.Option) continue;
            bool isMerge = tokens[i].Value == "--merge";
            actions.Add((tokens[i].Value[2..], isMerge && i + 1 < tokens.Count ? tokens[++i].Value : null));
        }
        if (actions.Count == 0)
            throw new CliException("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge");
        long? bytes = null;
        if (parse.GetValue<string?>("-g") is { } g)
        {
            if (actions.All(a => a.Op != "add")) throw new CliException("granularity only supported with --add");
            if (QemuSize.TryParse(g, out var value) != QemuSizeError.None || value > int.MaxValue + 1UL)
                throw new CliException("Invalid granularity specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
            bytes = value == 0 ? null : (long)value;
        }
        var b = parse.GetValue<string?>("-b");
        if (b is not null && actions.All(a => a.Op != "merge")) throw new CliException("Merge bitmap source file only supported with --merge");
        if (parse.GetValue<string?>("-F") is { } sf)
        {
            if (b is null) throw new CliException("-F only supported with -b");
            Formats.RequireQcow2(sf);
        }
        var path = parse.GetValue<string?>("FILENAME");
        var name = parse.GetValue<string?>("BITMAP");
        if (path is null || name is null) throw new CliException("Expecting filename and bitmap name");
        if (parse.GetValue<string?>("-f") is { } f && f != "qcow2")
        {
            if (f != "raw") Formats.RequireQcow2(f);
            throw new CliException($"Operation {actions[0].Op} on bitmap {name} failed: Can't store persistent bitmaps to '{path}': Operation not supported");
        }
        return (actions, bytes, path, name);
    }

    public static Command Create()
    {
        var add = new Option<bool>("--add") { Description = "create BITMAP (enabled unless --disable)" };
        var remove = new Option<bool>("--remove") { Description = "delete BITMAP" };
        var clear = new Option<bool>("--clear") { Description = "clear every bit of BITMAP" };
        var enable = new Option<bool>("--enable") { Description = "start tracking writes in BITMAP" };
        var disable = new Option<bool>("--disable") { Description = "stop tracking writes in BITMAP" };
        var merge = new Option<string[]>("--merge") { Description = "set in BITMAP every bit set in bitmap SOURCE", AllowMultipleArgumentsPerToken = false };
        var sourceFile = new Option<string?>("-b") { Description = "the image holding the --merge SOURCE bitmap (default: FILENAME)" };
        var sourceFormat = new Option<string?>("-F") { Description = "format of the -b image (qcow2)" };
        var granularity = new Option<string?>("-g") { Description = "granularity of an --add'ed bitmap (k/M/G suffixes; default: the cluster size within 4k..64k)" };
        var format = new Option<string?>("-f") { Description = "image format (qcow2)" };
        var file = new Argument<string?>("FILENAME") { Arity = ArgumentArity.ZeroOrOne };
        var bitmap = new Argument<string?>("BITMAP") { Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("bitmap", "add, remove, clear, enable, disable or merge persistent dirty bitmaps")
            { add, remove, clear, enable, disable, merge, sourceFile, sourceFormat, granularity, format, file, bitmap };
        command.SetAction(parse => CliRunner.RunAsync(async () =>
        {
            var (actions, bytes, path, name) = Plan(parse);
            var b = parse.GetValue(sourceFile);
            var f = parse.GetValue(format);
            await using var host = ImageHost.Create();
            await using var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, Format = f });
            Qcow2Image? source = null;
            try
            {
                foreach (var (op, src) in actions)
                {
                    try
                    {
                        switch (op)
                        {
                            case "add":
                                await image.AddBitmapAsync(name, bytes, enabled: !parse.GetValue(disable));
                                break;
                            case "remove": await image.RemoveBitmapAsync(name); break;
                            case "clear": await image.ClearBitmapAsync(name); break;
                            // --add --disable creates a disabled bitmap; --disable alone disables one.
                            case "enable": await image.SetBitmapEnabledAsync(name, true); break;
                            case "disable":
                                if (actions.Any(a => a.Op == "add")) break;
                                await image.SetBitmapEnabledAsync(name, false);
                                break;
                            case "merge":
                                if (b is not null && source is null)
                                    source = await Qcow2Image.OpenAsync(b, new Qcow2OpenOptions { Format = parse.GetValue(sourceFormat) });
                                await image.MergeBitmapAsync(name, src!, source);
                                break;
                        }
                    }
                    catch (Exception ex) when (ex is InvalidOperationException or KeyNotFoundException)
                    {
                        throw new CliException($"Operation {op} on bitmap {name} failed: {ex.Message}");
                    }
                }
            }
            finally
            {
                if (source is not null) await source.DisposeAsync();
            }
            await image.DisposeAsync();
            return 0;
        }));
        return command;
    }
}
