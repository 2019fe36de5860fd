using System.CommandLine;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a dd [-U] [-f FMT] [-O raw|qcow2] [bs=N] [count=N] [skip=N] if=IN of=OUT</c>, as qemu-img dd:
/// OUT is created (replaced) with the size of what is copied and every block is written, zeros
/// included, so a qcow2 OUT is fully allocated as qemu-img leaves it. qemu-img's arithmetic is
/// kept: count counts from the start of IN, skipped blocks included, so OUT holds
/// [skip*bs, min(count*bs, size of IN)); a skip past that end gives an empty OUT and a warning.
/// </summary>
internal static class DdCommand
{
    private const int MaxChunk = 4 * 1024 * 1024;
    private const string Suffixes = "You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.";

    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "input format (qcow2 or raw); probed when absent" };
        var outFormat = new Option<string>("-O") { Description = "output format: raw (default) or qcow2", DefaultValueFactory = _ => "raw" };
        var forceShare = ForceShareOption.Create();
        var operands = new Argument<string[]>("operands") { Arity = ArgumentArity.ZeroOrMore, Description = "bs=BLOCK_SIZE count=BLOCKS skip=BLOCKS if=INPUT of=OUTPUT" };
        var command = new Command("dd", "Copy part of an image into a new image, dd style") { format, outFormat, forceShare, operands };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
        {
            var o = Operands.Parse(parse.GetValue(operands) ?? []);
            // --image-opts (or json:{...}) spells if=; of= is always a file name, as in qemu-img dd.
            var spec = sources.ResolveHostFile(parse, o.Input!, parse.GetValue(format), "dd");
            return RunAsync(o with { Input = spec.Path }, spec.Format, parse.GetValue(outFormat)!, parse.GetValue(forceShare), ct);
        }));
        return command;
    }

    /// <summary>dd's operands as qemu-img reads them (the last of a repeated one wins).</summary>
    internal sealed record Operands(string? Input, string? Output, long BlockSize, long? Count, long? Skip)
    {
        public static Operands Parse(IEnumerable<string> args)
        {
            string? input = null, output = null;
            long bs = 512;
            long? count = null, skip = null;
            foreach (var arg in args)
            {
                int eq = arg.IndexOf('=', StringComparison.Ordinal);
                string key = eq < 0 ? arg : arg[..eq], value = eq < 0 ? "" : arg[(eq + 1)..];
                switch (eq < 0 ? null : key)
                {
                    case "if": input = value; break;
                    case "of": output = value; break;
                    case "bs":
                        bs = Number("bs", value);
                        if (bs is < 1 or > int.MaxValue) throw new CliException($"Invalid bs specified. Must be between 1 and {int.MaxValue}.");
                        break;
                    case "count": count = Number("count", value); break;
                    case "skip": skip = Number("skip", value); break;
                    default: throw new CliException($"unrecognized operand {key}");
                }
            }
            if (input is null || output is null) throw new CliException("Must specify both input and output files");
            return new Operands(input, output, bs, count, skip);
        }

        private static long Number(string name, string text)
        {
            if (QemuSize.TryParse(text, out var value) != QemuSizeError.None || value > long.MaxValue)
                throw new CliException($"Invalid {name} specified. {Suffixes}");
            return (long)value;
        }
    }

    public static async Task<int> RunAsync(Operands o, string? format, string outFormat, bool forceShare, CancellationToken ct)
    {
        if (outFormat is not ("raw" or "qcow2")) throw new CliException("Unknown file format");
        await using var src = await Qcow2Image.OpenAsync(o.Input!, new Qcow2OpenOptions { Format = format, ForceShare = forceShare }, ct).ConfigureAwait(false);
        long size = src.VirtualSize;
        long bs = o.BlockSize;
        if (o.Count is { } count && count <= long.MaxValue / bs && count * bs < size) size = count * bs;
        bool skipPastEnd = o.Skip is { } skip && (skip > long.MaxValue / bs || size < skip * bs);
        long start = skipPastEnd ? size : (o.Skip ?? 0) * bs;
        string target = o.Output!;
        var hold = TestHold.FromEnvironment();
        if (outFormat == "raw")
        {
            // A raw OUT is held (QEMU's write lock) from its creation to the end and flushed before exit 0.
            using var raw = CreateRaw(target, size - start);
            if (skipPastEnd) await WarnSkipAsync(o).ConfigureAwait(false);
            var rawBuffer = new byte[Math.Min(bs, MaxChunk)];
            for (long pos = start; pos < size;)
            {
                int n = (int)Math.Min(rawBuffer.Length, size - pos);
                await src.ReadAsync(pos, rawBuffer.AsMemory(0, n), ct).ConfigureAwait(false);
                await RandomAccess.WriteAsync(raw.Handle, rawBuffer.AsMemory(0, n), pos - start, ct).ConfigureAwait(false);
                await hold.WrittenAsync(n).ConfigureAwait(false);
                pos += n;
            }
            await hold.EndAsync().ConfigureAwait(false);
            RandomAccess.FlushToDisk(raw.Handle);
            return 0;
        }
        Qcow2ConvertTarget dst;
        try
        {
            var options = CreateOptions.Parse("qcow2", [], imagePath: null).ToQcow2Options(size - start, $"{target}: error while creating output image: ");
            // Created and opened under one write lock: no other process gets in between.
            dst = await Qcow2ConvertTarget.CreateAsync(target, options, CacheMode.Writeback, () => hold.AtAsync("created"), ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ArgumentException or IOException or UnauthorizedAccessException)
        {
            throw CreateFailed(target, ex);
        }
        await using (dst.ConfigureAwait(false))
        {
            if (skipPastEnd) await WarnSkipAsync(o).ConfigureAwait(false);
            var buffer = new byte[Math.Min(bs, MaxChunk)];
            for (long pos = start; pos < size;)
            {
                int n = (int)Math.Min(buffer.Length, size - pos);
                await src.ReadAsync(pos, buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                await dst.Image.WriteAsync(pos - start, buffer.AsMemory(0, n), cancellationToken: ct).ConfigureAwait(false);
                pos += n;
            }
        }
        return 0;
    }

    // Like dd(1): an empty output and a warning, but success.
    private static Task WarnSkipAsync(Operands o) => Console.Error.WriteLineAsync($"q2a: {o.Input}: cannot skip to specified offset");

    private static CliException CreateFailed(string target, Exception ex) =>
        new($"{target}: error while creating output image: {(ex is ImageLockException l ? l.Reason : ex.Message)}", ex);

    /// <summary>
    /// Creates (or opens, never truncating) <paramref name="target"/>, takes its write lock, and only
    /// then cuts it to <paramref name="length"/> zero bytes: a file another process holds is refused
    /// before anything of it changes.
    /// </summary>
    private static RawTarget CreateRaw(string target, long length)
    {
        Microsoft.Win32.SafeHandles.SafeFileHandle? handle = null;
        ImageLock? imageLock = null;
        try
        {
#pragma warning disable CA2000 // Moves into the returned RawTarget, whose caller disposes it; the failure path below disposes it.
            handle = File.OpenHandle(target, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
#pragma warning restore CA2000
            imageLock = ImageLock.Acquire(target, LockMode.Writer);
            RandomAccess.SetLength(handle, 0);
            RandomAccess.SetLength(handle, length);
            return new RawTarget(handle, imageLock);
        }
        catch (Exception ex) when (ex is ArgumentException or IOException or UnauthorizedAccessException)
        {
            imageLock?.Dispose();
            handle?.Dispose();
            throw CreateFailed(target, ex);
        }
    }

    /// <summary>A raw output file and the write lock held on it; disposing releases the lock, then closes the file.</summary>
    private sealed record RawTarget(Microsoft.Win32.SafeHandles.SafeFileHandle Handle, ImageLock Lock) : IDisposable
    {
        public void Dispose()
        {
            Lock.Dispose();
            Handle.Dispose();
        }
    }
}
