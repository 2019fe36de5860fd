using System.CommandLine;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// <c>q2a rebase [-f FMT] [-t CACHE] [-T SRC_CACHE] [-p] [-q] [-U] [-u] -b BACKING [-F FMT] IMG</c>, as qemu-img
/// rebase: the safe mode copies into IMG, through the write engine, every sector its old backing
/// chain and the new one read differently where IMG itself has nothing, then names the new backing
/// file in one header write (<see cref="Qcow2Image.ChangeBackingFileAsync"/>). A crash before that
/// write leaves IMG reading as before over its old backing file; after it, as it does over the new
/// one. <c>-u</c> only changes the name; <c>-b ""</c> drops the backing file (safe mode: after
/// copying in everything it provided).
/// </summary>
internal static class RebaseCommand
{
    private const int ChunkSize = 2 * 1024 * 1024;
    private const int Sector = 512;

    public static Command Create()
    {
        var format = new Option<string?>("-f") { Description = "format of IMG (qcow2)" };
        var cache = new Option<string?>("-t") { Description = "cache mode of IMG: none, writeback (default), writethrough, directsync, unsafe" };
        var sourceCache = new Option<string?>("-T") { Description = "cache mode of the backing files read" };
        var progress = new Option<bool>("-p") { Description = "show progress" };
        var quiet = new Option<bool>("-q") { Description = "quiet: no progress" };
        var forceShare = ForceShareOption.Create();
        var unsafeMode = new Option<bool>("-u") { Description = "unsafe: only change the backing file name, copy nothing" };
        var backing = new Option<string?>("-b") { Description = "new backing file (\"\" for none)" };
        var backingFormat = new Option<string?>("-F") { Description = "format of the new backing file" };
        var image = new Argument<string[]>("filename") { Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("rebase", "Change the backing file of an image, keeping its content (or only its name with -u)")
            { format, cache, sourceCache, progress, quiet, forceShare, unsafeMode, backing, backingFormat, image };
        var sources = Sources.SourceOptions.AddTo(command);
        command.SetAction((parse, ct) => CliRunner.RunAsync(() =>
        {
            var files = parse.GetValue(image) ?? [];
            if (files.Length != 1) throw new CliException("Expecting one image file name");
            var cacheMode = CacheModes.Parse(parse.GetValue(cache)) ?? throw new CliException($"Invalid cache option: {parse.GetValue(cache)}");
            var sourceMode = CacheModes.Parse(parse.GetValue(sourceCache)) ?? throw new CliException($"Invalid source cache option: {parse.GetValue(sourceCache)}");
            var spec = sources.ResolveHostFile(parse, files[0], parse.GetValue(format), "rebase");
            var request = new Request(spec.Path!, parse.GetValue(backing), parse.GetValue(backingFormat), parse.GetValue(unsafeMode))
            {
                Format = spec.Format,
                Cache = cacheMode,
                SourceCache = sourceMode,
                Progress = parse.GetValue(progress) && !parse.GetValue(quiet),
                ForceShare = parse.GetValue(forceShare),
            };
            return RunAsync(request, ct);
        }));
        return command;
    }

    internal sealed record Request(string Image, string? Backing, string? BackingFormat, bool Unsafe)
    {
        public string? Format { get; init; }
        public Engine.Device.CacheMode Cache { get; init; }
        public Engine.Device.CacheMode SourceCache { get; init; }
        public bool Progress { get; init; }
        public bool ForceShare { get; init; }
    }

    public static async Task<int> RunAsync(Request r, CancellationToken ct)
    {
        if (!r.Unsafe && r.Backing is null) throw new CliException("Must specify backing file (-b) or use unsafe mode (-u)");
        // -u without -b drops the backing file, as qemu-img does.
        string? newName = string.IsNullOrEmpty(r.Backing) ? null : r.Backing;
        if (r.Format is not null and not "qcow2")
            throw new CliException($"Could not change the backing file to '{r.Backing}': Operation not supported");
        var hold = TestHold.FromEnvironment();
        await using var host = ImageHost.Create();
        var top = await host.OpenAsync(r.Image, new Qcow2OpenOptions { ReadOnly = false, Format = r.Format, Cache = r.Cache }, ct).ConfigureAwait(false);
        await using (top.ConfigureAwait(false))
        {
            if (r.Unsafe)
            {
                if (newName is not null && r.BackingFormat is null) throw FormatRequired(newName);
                await top.ChangeBackingFileAsync(newName, r.BackingFormat, ct).ConfigureAwait(false);
                if (r.Progress) PrintProgress(true);
                return 0;
            }
            Qcow2OpenOptions ReadOptions(string? format) => new() { Format = format, ForceShare = r.ForceShare, Cache = r.SourceCache };
            Qcow2Image? oldBacking = null, newBacking = null;
            try
            {
                if (top.Info.BackingFile is { } oldName)
                {
                    var oldPath = BackingChain.Resolve(r.Image, oldName);
                    try
                    {
                        oldBacking = await Qcow2Image.OpenAsync(oldPath, ReadOptions(top.Info.BackingFormat), ct).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is IOException or InvalidDataException or NotSupportedException or Engine.Device.ImageLockException)
                    {
                        throw new CliException($"Could not open old backing file '{oldPath}': {Describe(ex)}", ex);
                    }
                }
                if (newName is not null)
                {
                    var newPath = BackingChain.Resolve(r.Image, newName);
                    try
                    {
                        newBacking = await Qcow2Image.OpenAsync(newPath, ReadOptions(r.BackingFormat), ct).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is IOException or InvalidDataException or NotSupportedException or Engine.Device.ImageLockException)
                    {
                        throw new CliException($"Could not open new backing file '{newName}': {Describe(ex)}", ex);
                    }
                }
                var meter = r.Progress ? new ProgressMeter(top.VirtualSize, minSkip: 2f) : null;
                meter?.Print(0);
                await CopyDifferencesAsync(top, oldBacking, newBacking, meter, hold, ct).ConfigureAwait(false);
                await top.FlushAsync(ct).ConfigureAwait(false);
                // qemu-img copies first and only then finds the format missing: the image still reads as before.
                if (newName is not null && r.BackingFormat is null) throw FormatRequired(newName);
                await top.ChangeBackingFileAsync(newName, r.BackingFormat, ct).ConfigureAwait(false);
                await hold.EndAsync().ConfigureAwait(false);
                meter?.Finish();
            }
            finally
            {
                if (oldBacking is not null) await oldBacking.DisposeAsync().ConfigureAwait(false);
                if (newBacking is not null) await newBacking.DisposeAsync().ConfigureAwait(false);
            }
        }
        return 0;
    }

    private static CliException FormatRequired(string name) => new($"Could not change the backing file to '{name}': backing format must be specified");

    private static string Describe(Exception ex) => ex is Engine.Device.ImageLockException l ? l.Reason : ex.Message;

    private static void PrintProgress(bool enabled)
    {
        if (!enabled) return;
        var meter = new ProgressMeter(1);
        meter.Print(0);
        meter.Finish();
    }

    /// <summary>
    /// Where <paramref name="top"/> allocates nothing, writes the old backing chain's sectors that
    /// differ from the new one's (zeros past a backing file's end, or when there is none) into it,
    /// so that it reads the same over the new backing file as it did over the old.
    /// </summary>
    private static async Task CopyDifferencesAsync(Qcow2Image top, Qcow2Image? oldBacking, Qcow2Image? newBacking,
        ProgressMeter? meter, TestHold hold, CancellationToken ct)
    {
        long size = top.VirtualSize;
        long oldSize = oldBacking?.VirtualSize ?? 0;
        long newSize = newBacking?.VirtualSize ?? 0;
        var bufOld = new byte[ChunkSize];
        var bufNew = new byte[ChunkSize];
        var extents = new List<ImageExtent>();
        await foreach (var e in top.GetMapAsync(0, size, ct).ConfigureAwait(false)) extents.Add(e);
        meter?.Schedule(ProgressTicks(extents, size, oldBacking is null ? 0 : oldSize, newBacking is null ? 0 : newSize, L2Span(top)));
        foreach (var extent in extents)
        {
            // Allocated in the top image itself (data or zeros): its content does not depend on the backing file.
            if (extent.Depth == 0 && extent.Present) { meter?.Advance(extent.End); continue; }
            for (long pos = extent.Start; pos < extent.End;)
            {
                int n = (int)Math.Min(ChunkSize, extent.End - pos);
                bool oldIsZero = pos >= oldSize;
                if (!oldIsZero) n = (int)Math.Min(n, oldSize - pos);
                if (pos < newSize) n = (int)Math.Min(n, newSize - pos);
                var old = bufOld.AsMemory(0, n);
                var now = bufNew.AsMemory(0, n);
                if (oldIsZero) old.Span.Clear();
                else await oldBacking!.ReadAsync(pos, old, ct).ConfigureAwait(false);
                if (pos >= newSize) now.Span.Clear();
                else await newBacking!.ReadAsync(pos, now, ct).ConfigureAwait(false);
                for (int at = 0; at < n;)
                {
                    int run = SameRun(old.Span[at..], now.Span[at..], out bool differ);
                    if (differ)
                    {
                        if (oldIsZero) await top.WriteZeroesAsync(pos + at, run, cancellationToken: ct).ConfigureAwait(false);
                        else await top.WriteAsync(pos + at, old.Slice(at, run), cancellationToken: ct).ConfigureAwait(false);
                        await hold.WrittenAsync(run).ConfigureAwait(false);
                    }
                    at += run;
                }
                pos += n;
                meter?.Advance(pos);
            }
        }
    }

    /// <summary>
    /// The progress qemu-img rebase prints: it walks the image in steps of at most 2 MiB, each cut where
    /// the top image's allocation changes (and at the end of an L2 table's range, where its block status
    /// stops) and at the old and new backing files' ends, and adds 100 / (size / 2 MiB) for each step the
    /// top does not allocate. Returns (end of step, value after it).
    /// </summary>
    internal static List<(long End, float Value)> ProgressTicks(IReadOnlyList<ImageExtent> extents, long size, long oldSize, long newSize, long l2Span)
    {
        var ticks = new List<(long, float)>();
        if (size <= 0) return ticks;
        float step = 100f / (size / Math.Min(size, ChunkSize));
        float current = 0;
        int at = 0;
        for (long offset = 0; offset < size;)
        {
            while (extents[at].End <= offset) at++;
            bool allocated = Allocated(extents[at]);
            // The run of the same allocation from offset (qemu's bdrv_is_allocated), within one L2 table's range.
            long runEnd = extents[at].End;
            for (int k = at + 1; k < extents.Count && Allocated(extents[k]) == allocated; k++) runEnd = extents[k].End;
            long n = Math.Min(Math.Min(ChunkSize, size - offset), runEnd - offset);
            n = Math.Min(n, (offset / l2Span + 1) * l2Span - offset);
            if (!allocated)
            {
                if (offset < oldSize) n = Math.Min(n, oldSize - offset);
                if (offset < newSize) n = Math.Min(n, newSize - offset);
                current = Math.Min(current + step / 100f * 100f, 100f);
                ticks.Add((offset + n, current));
            }
            offset += n;
        }
        return ticks;

        static bool Allocated(ImageExtent e) => e.Depth == 0 && e.Present;
    }

    // The guest range one L2 table maps (qemu's qcow2 block status never crosses it).
    private static long L2Span(Qcow2Image image)
    {
        long cs = image.Info.ClusterSize ?? 65536;
        long entries = cs / (image.Header is { HasExtendedL2: true } ? 16 : 8);
        return entries * cs;
    }

    /// <summary>
    /// The length of the leading run of 512-byte sectors (the last may be shorter) that all differ or
    /// all agree between <paramref name="a"/> and <paramref name="b"/>, as qemu-img compares them.
    /// </summary>
    internal static int SameRun(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, out bool differ)
    {
        static bool Differs(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, int at) =>
            !a.Slice(at, Math.Min(Sector, a.Length - at)).SequenceEqual(b.Slice(at, Math.Min(Sector, a.Length - at)));
        differ = Differs(a, b, 0);
        int len = Math.Min(Sector, a.Length);
        while (len < a.Length && Differs(a, b, len) == differ) len += Math.Min(Sector, a.Length - len);
        return len;
    }
}
