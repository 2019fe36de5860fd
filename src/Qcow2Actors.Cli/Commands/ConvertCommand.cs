using System.CommandLine;
using System.Globalization;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a convert [-f FMT] [-O raw] [-l SNAPSHOT] [-p] SRC DST</c>: writes the guest content of
/// SRC (or one of its internal snapshots) to a sparse raw file: zero and unallocated ranges, and
/// zero 4 KiB blocks inside data, are left as holes.
/// </summary>
internal static class ConvertCommand
{
    private const int ChunkSize = 2 * 1024 * 1024;
    private const int ZeroBlock = 4096;

    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "source format (qcow2 or raw); probed when absent" };
        var outFormat = new Option<string>("-O") { Description = "output format (only raw)", DefaultValueFactory = _ => "raw" };
        var snapshot = new Option<string?>("-l") { Description = "snapshot to read: ID_OR_NAME, snapshot.id=ID or snapshot.name=NAME" };
        var progress = new Option<bool>("-p") { Description = "show progress" };
        var source = new Argument<string>("filename") { Description = "source image" };
        var target = new Argument<string>("output_filename") { Description = "target file" };
        var command = new Command("convert", "Convert an image (or one of its snapshots) to a raw file")
            { format, outFormat, snapshot, progress, source, target };
        command.SetAction((parse, ct) => CliRunner.RunAsync(() => RunAsync(parse.GetValue(source)!, parse.GetValue(target)!,
            parse.GetValue(format), parse.GetValue(outFormat)!, parse.GetValue(snapshot), parse.GetValue(progress), ct)));
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

    public static async Task<int> RunAsync(string sourcePath, string targetPath, string? format, string outFormat, string? snapshot,
        bool progress, CancellationToken ct)
    {
        if (outFormat != "raw")
            throw new NotSupportedException($"output format '{outFormat}' is not supported (only raw)");
        await using var src = await Qcow2Image.OpenAsync(sourcePath,
            new Qcow2OpenOptions { Format = format, Snapshot = SnapshotSelector(snapshot) }, ct).ConfigureAwait(false);
        // qemu-img convert -l keeps the active image's size (it swaps in the snapshot's L1 only):
        // match it, zeros past the snapshot's own end, cut at the active size.
        long size = snapshot is not null && src.Header is { } active ? active.Size : src.VirtualSize;
        long contentEnd = Math.Min(size, src.VirtualSize);
        using var dst = File.OpenHandle(targetPath, FileMode.Create, FileAccess.ReadWrite, FileShare.Read);
        RandomAccess.SetLength(dst, size);

        var meter = progress ? new ProgressMeter(size) : null;
        meter?.Print(0);
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
        meter?.Finish();
        return 0;
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
    private sealed class ProgressMeter(long total)
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
