using Qcow2Actors.Engine.Device;
using System.CommandLine;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a convert [-f FMT] [-O raw|qcow2] [-c] [-o OPTIONS] [-B BACKING -F FMT] [-l SNAPSHOT] [-p] SRC DST</c>.
/// Raw output is a sparse file: zero and unallocated ranges, and zero 4 KiB blocks inside data,
/// are left as holes. Qcow2 output is created with the engine's image creator and written
/// through the write engine: only data is copied (qemu-img's default <c>-S 4k</c>: zero blocks
/// inside data are skipped too), with <c>-c</c> every cluster compressed; with <c>-B</c> only
/// what the source's top image allocates is copied, and its zeros are written as zeros.
/// </summary>
internal static class ConvertCommand
{
    private const int ChunkSize = 2 * 1024 * 1024;
    private const int ZeroBlock = 4096;

    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "source format (qcow2 or raw); probed when absent" };
        var outFormat = new Option<string>("-O") { Description = "output format: raw or qcow2", DefaultValueFactory = _ => "raw" };
        var snapshot = new Option<string?>("-l") { Description = "snapshot to read: ID_OR_NAME, snapshot.id=ID or snapshot.name=NAME" };
        var progress = new Option<bool>("-p") { Description = "show progress" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress" };
        var compress = new Option<bool>("-c") { Description = "compress every cluster of the target (qcow2 only)" };
        var options = new Option<string[]>("-o") { Description = "target format options, comma separated" };
        var backing = new Option<string?>("-B") { Description = "backing file of the target: only what the source's top image holds is copied" };
        var backingFormat = new Option<string?>("-F") { Description = "format of the target's backing file" };
        var forceShare = ForceShareOption.Create();
        var source = new Argument<string>("filename") { Description = "source image" };
        var target = new Argument<string>("output_filename") { Description = "target file" };
        var command = new Command("convert", "Convert an image (or one of its snapshots) to a raw or qcow2 image")
            { format, outFormat, snapshot, progress, quiet, compress, options, backing, backingFormat, forceShare, source, target };
        command.SetAction((parse, ct) => CliRunner.RunAsync(() => RunAsync(
            new ConvertRequest(parse.GetValue(source)!, parse.GetValue(target)!)
            {
                Format = parse.GetValue(format),
                OutFormat = parse.GetValue(outFormat)!,
                Snapshot = parse.GetValue(snapshot),
                Progress = parse.GetValue(progress) && !parse.GetValue(quiet),
                Compress = parse.GetValue(compress),
                Options = parse.GetValue(options) ?? [],
                BackingFile = parse.GetValue(backing),
                BackingFormat = parse.GetValue(backingFormat),
                ForceShare = parse.GetValue(forceShare),
            }, ct)));
        ConvertBitmaps.Attach(command, source, target, format, outFormat, options);
        return command;
    }

    /// <summary>Strips qemu-img's <c>snapshot.id=</c> / <c>snapshot.name=</c> prefixes; a bare value is an id or a name.</summary>
    internal static string? SnapshotSelector(string? spec)
    {
        if (spec is null) return null;
        foreach (var prefix in new[] { "snapshot.id=", "snapshot.name=" })
            if (spec.StartsWith(prefix, StringComparison.Ordinal)) return spec[prefix.Length..];
        return spec;
    }

    /// <summary>The raw-output form the read-side tests call.</summary>
    public static Task<int> RunAsync(string sourcePath, string targetPath, string? format, string outFormat, string? snapshot,
        bool progress, CancellationToken ct) =>
        RunAsync(new ConvertRequest(sourcePath, targetPath) { Format = format, OutFormat = outFormat, Snapshot = snapshot, Progress = progress }, ct);

    public static async Task<int> RunAsync(ConvertRequest request, CancellationToken ct)
    {
        if (request.OutFormat is not ("raw" or "qcow2"))
            throw new NotSupportedException($"output format '{request.OutFormat}' is not supported (raw or qcow2)");
        if (request.OutFormat == "raw")
        {
            if (request.Compress) throw new NotSupportedException("Compression not supported for this file format");
            if (request.BackingFile is not null) throw new NotSupportedException("Backing file not supported for file format 'raw'");
            if (request.Options.Count > 0) throw new NotSupportedException("q2a convert -O raw takes no -o options");
        }
        // Parse the target's options before touching anything, as qemu-img does (its parse errors
        // name no file; the shared -o parser is create's).
        var targetOptions = request.OutFormat == "qcow2" ? CreateOptions.Parse("qcow2", request.Options, imagePath: null) : null;
        if (targetOptions is { HelpRequested: true })
        {
            await Console.Out.WriteAsync(targetOptions.HelpText()).ConfigureAwait(false);
            return 0;
        }
        // -B and -F win over backing_file= and backing_fmt=.
        if (request.BackingFile is { } b) targetOptions?.Set("backing_file", b);
        if (request.BackingFormat is { } f) targetOptions?.Set("backing_fmt", f);
        if (targetOptions?.Text("backing_file") is not null && targetOptions.Text("backing_fmt") is null)
            throw new ArgumentException("Use of backing file requires explicit backing format");

        if (string.Equals(Path.GetFullPath(request.Source), Path.GetFullPath(request.Target), StringComparison.Ordinal))
            throw new ArgumentException($"'{request.Target}' is the source image: converting onto itself would destroy it");
        await using var src = await Qcow2Image.OpenAsync(request.Source,
            new Qcow2OpenOptions { Format = request.Format, Snapshot = SnapshotSelector(request.Snapshot), ForceShare = request.ForceShare }, ct).ConfigureAwait(false);
        // qemu-img convert -l keeps the active image's size (it swaps in the snapshot's L1 only):
        // match it, zeros past the snapshot's own end, cut at the active size.
        long size = request.Snapshot is not null && src.Header is { } active ? active.Size : src.VirtualSize;
        long contentEnd = Math.Min(size, src.VirtualSize);
        var meter = request.Progress ? new ProgressMeter(size) : null;
        meter?.Print(0);
        if (targetOptions is null)
            await ToRawAsync(src, request.Target, size, contentEnd, meter, ct).ConfigureAwait(false);
        else
        {
            Qcow2CreateOptions create;
            try
            {
                // The source decides the size, as in qemu-img convert (a size= option is ignored).
                create = targetOptions.ToQcow2Options(size, $"{request.Target}: error while converting qcow2: ");
                if (create.DataFile is not null && request.Compress)
                    throw new NotSupportedException("Compression is not supported with an external data file");
                // qemu-img convert replaces the target, but never one another process has open.
                if (File.Exists(request.Target))
                {
                    using var inUse = ImageLock.Acquire(request.Target, LockMode.Creator);
                    File.Delete(request.Target);
                }
                ImageCreator.Create(request.Target, create);
            }
            catch (ArgumentException ex)
            {
                throw new ArgumentException($"{request.Target}: error while converting qcow2: {ex.Message}", ex);
            }
            await ToQcow2Async(src, request.Target, size, contentEnd, request.Compress, create.BackingFile is not null, meter, ct).ConfigureAwait(false);
        }
        meter?.Finish();
        return 0;
    }

    private static async Task ToRawAsync(Qcow2Image src, string targetPath, long size, long contentEnd, ProgressMeter? meter, CancellationToken ct)
    {
        // The target is truncated: refuse one that another process holds (qemu-img's create lock).
        using var targetLock = File.Exists(targetPath) ? ImageLock.Acquire(targetPath, LockMode.Creator) : null;
        using var dst = File.OpenHandle(targetPath, FileMode.Create, FileAccess.ReadWrite, FileShare.ReadWrite);
        RandomAccess.SetLength(dst, size);
        var buffer = new byte[ChunkSize];
        await foreach (var extent in src.GetMapAsync(0, contentEnd, ct).ConfigureAwait(false))
        {
            if (!extent.Zero)
            {
                for (long pos = extent.Start; pos < extent.End; pos += ChunkSize)
                {
                    int n = (int)Math.Min(ChunkSize, extent.End - pos);
                    await src.ReadAsync(pos, buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                    await WriteSparseAsync(dst, buffer.AsMemory(0, n), pos, ct).ConfigureAwait(false);
                    meter?.Advance(pos + n);
                }
            }
            meter?.Advance(extent.End);
        }
    }

    private static async Task ToQcow2Async(Qcow2Image src, string targetPath, long size, long contentEnd, bool compress, bool targetHasBacking,
        ProgressMeter? meter, CancellationToken ct)
    {
        var host = ImageHost.Create();
        try
        {
            var dst = await host.OpenAsync(targetPath, new Qcow2OpenOptions { ReadOnly = false }, ct).ConfigureAwait(false);
            try
            {
                var copier = new Qcow2Copier(src, dst, size, contentEnd, targetHasBacking, meter, ct);
                await copier.RunAsync(compress).ConfigureAwait(false);
            }
            finally
            {
                // A clean close: checkpoint, journal truncated, header bits cleared.
                await dst.DisposeAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            await host.DisposeAsync().ConfigureAwait(false);
        }
    }

    // Writes only the 4 KiB blocks that hold a non-zero byte; the rest stays a hole.
    private static async ValueTask WriteSparseAsync(Microsoft.Win32.SafeHandles.SafeFileHandle dst, ReadOnlyMemory<byte> data, long offset, CancellationToken ct)
    {
        int start = 0;
        while (start < data.Length)
        {
            while (start < data.Length && IsZero(data.Span.Slice(start, Math.Min(ZeroBlock, data.Length - start)))) start += ZeroBlock;
            if (start >= data.Length) break;
            int end = start;
            while (end < data.Length && !IsZero(data.Span.Slice(end, Math.Min(ZeroBlock, data.Length - end)))) end += ZeroBlock;
            end = Math.Min(end, data.Length);
            await RandomAccess.WriteAsync(dst, data[start..end], offset + start, ct).ConfigureAwait(false);
            start = end;
        }
    }

    private static bool IsZero(ReadOnlySpan<byte> span) => !span.ContainsAnyExcept((byte)0);

    /// <summary>qemu-img's progress line: "    (12.34/100%)" rewritten in place with a carriage return.</summary>
    internal sealed class ProgressMeter(long total)
    {
        private double _shown = -1;

        public void Advance(long done)
        {
            double pct = total == 0 ? 100 : done * 100.0 / total;
            if (pct - _shown >= 1 && pct < 100) Print(pct);
        }

        public void Print(double pct)
        {
            _shown = pct;
            Console.Out.Write(string.Create(CultureInfo.InvariantCulture, $"    ({pct:F2}/100%)\r"));
            Console.Out.Flush();
        }

        public void Finish()
        {
            Print(100);
            Console.Out.Write('\n');
            Console.Out.Flush();
        }
    }
}
