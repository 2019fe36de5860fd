using Qcow2Actors.Engine.Device;
using System.CommandLine;
using System.Globalization;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;

namespace Qcow2Actors.Cli.Commands;

/// <summary>What <c>q2a create</c> was asked to do, as typed.</summary>
internal sealed record CreateRequest(string Path, string? Size)
{
    /// <summary>"qcow2" or "raw" (qemu-img's default is raw).</summary>
    public string Format { get; init; } = "raw";
    /// <summary>Every <c>-o</c> argument in order.</summary>
    public IReadOnlyList<string> Options { get; init; } = [];
    /// <summary><c>-b</c>.</summary>
    public string? BackingFile { get; init; }
    /// <summary><c>-F</c>.</summary>
    public string? BackingFormat { get; init; }
    /// <summary><c>-u</c>: do not open the backing file.</summary>
    public bool Unsafe { get; init; }
    /// <summary><c>-q</c>: no "Formatting" line.</summary>
    public bool Quiet { get; init; }
}

/// <summary>
/// <c>q2a create [-f FMT] [-o OPTIONS] [-b BACKING -F FMT] [-u] [-q] IMG [SIZE]</c>: qemu-img
/// create's options, defaults, "Formatting" line and error lines. The new image is written
/// beside the target and renamed over it, so a failed create never destroys an existing file
/// (qemu-img truncates it first); an existing external data file is emptied, as qemu-img does.
/// </summary>
internal static class CreateCommand
{
    public static Command Create()
    {
        var format = new Option<string>("-f") { Description = "image format: qcow2 or raw", DefaultValueFactory = _ => "raw" };
        var options = new Option<string[]>("-o") { Description = "format options, comma separated (-o help lists them)" };
        var backing = new Option<string?>("-b") { Description = "backing file (stored as given; relative to the image)" };
        var backingFormat = new Option<string?>("-F") { Description = "backing file format" };
        var unsafeBacking = new Option<bool>("-u") { Description = "do not open the backing file (SIZE is then required)" };
        var quiet = new Option<bool>("-q") { Description = "do not print the Formatting line" };
        var path = new Argument<string>("filename");
        var size = new Argument<string?>("size") { Arity = ArgumentArity.ZeroOrOne, Description = "virtual size; k, M, G, T, P, E suffixes" };
        var command = new Command("create", "Create a new qcow2 or raw image")
            { format, options, backing, backingFormat, unsafeBacking, quiet, path, size };
        command.SetAction((parse, ct) => CliRunner.RunAsync(() => RunAsync(
            new CreateRequest(parse.GetValue(path)!, parse.GetValue(size))
            {
                Format = parse.GetValue(format)!,
                Options = parse.GetValue(options) ?? [],
                BackingFile = parse.GetValue(backing),
                BackingFormat = parse.GetValue(backingFormat),
                Unsafe = parse.GetValue(unsafeBacking),
                Quiet = parse.GetValue(quiet),
            }, Console.Out, ct)));
        return command;
    }

    public static async Task<int> RunAsync(CreateRequest request, TextWriter stdout, CancellationToken ct)
    {
        string img = request.Path;
        var opts = CreateOptions.Parse(request.Format, request.Options, img);
        if (opts.HelpRequested)
        {
            await stdout.WriteAsync(opts.HelpText()).ConfigureAwait(false);
            return 0;
        }

        ulong? size = null;
        if (request.Size is { } sizeText) size = ParseImageSize(sizeText);
        if (size is not null && opts.Number("size") is not null)
            throw new CliException($"{img}: The image size must be specified only once");
        size ??= opts.Number("size");

        // -b and -F win over backing_file= and backing_fmt=, as in qemu-img.
        if (request.BackingFile is { } b) opts.Set("backing_file", b);
        if (request.BackingFormat is { } f) opts.Set("backing_fmt", f);
        string? backingFile = opts.Text("backing_file");
        string? backingFormat = opts.Text("backing_fmt");
        if (opts.Format == "qcow2")
        {
            if (backingFile is not null && backingFormat is null)
                throw new CliException($"{img}: Backing file specified without backing format");
            if (backingFile is null && backingFormat is not null)
                throw new CliException($"{img}: Backing format cannot be used without backing file");
            if (backingFile is not null && !request.Unsafe)
            {
                long backingSize = await BackingSizeAsync(img, backingFile, backingFormat!, ct).ConfigureAwait(false);
                size ??= (ulong)backingSize;
            }
        }
        if (size is null) throw new CliException($"{img}: Image creation needs a size parameter");
        if (size > long.MaxValue)
            throw new CliException($"Invalid image size specified. Must be between 0 and {long.MaxValue}.");
        opts.Set("size", size.Value.ToString(CultureInfo.InvariantCulture), size);

        if (!request.Quiet)
            await stdout.WriteLineAsync($"Formatting '{img}', fmt={opts.Format}{opts.Describe()}").ConfigureAwait(false);
        await stdout.FlushAsync(ct).ConfigureAwait(false);

        try
        {
            if (opts.Format == "raw") CreateRaw(img, (long)size.Value, opts.Text("preallocation"));
            else CreateQcow2(img, opts.ToQcow2Options((long)size.Value, $"{img}: "), opts.HostPreallocation);
        }
        catch (Exception ex) when (ex is ArgumentException or IOException or UnauthorizedAccessException
            or Qcow2FormatException or NotSupportedException)
        {
            throw new CliException(ex is ImageLockException l ? $"{l.ImagePath}: {l.Reason}" : $"{img}: {ex.Message}", ex);
        }
        return 0;
    }

    /// <summary>The SIZE argument, with qemu-img's two error lines joined into one.</summary>
    /// <exception cref="CliException">Not a size, or not below 2^63.</exception>
    internal static ulong ParseImageSize(string text) => QemuSize.TryParse(text, out var value) switch
    {
        QemuSizeError.None when value <= long.MaxValue => value,
        QemuSizeError.Invalid => throw new CliException("Invalid image size specified. You may use k, M, G, T, P or E suffixes for "
            + "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."),
        _ => throw new CliException($"Invalid image size specified. Must be between 0 and {long.MaxValue}."),
    };

    // qemu-img opens the backing file (unless -u) to prove it is there and readable, and takes
    // its virtual size when SIZE is absent; a relative name is relative to the new image.
    private static async Task<long> BackingSizeAsync(string img, string backingFile, string backingFormat, CancellationToken ct)
    {
        string display = Path.IsPathRooted(backingFile) ? backingFile : Path.Combine(Path.GetDirectoryName(img) ?? "", backingFile);
        try
        {
            if (!File.Exists(display)) throw new FileNotFoundException($"Could not open '{display}': No such file or directory", display);
            await using var backing = await Qcow2Image.OpenAsync(display, new Qcow2OpenOptions { Format = backingFormat }, ct).ConfigureAwait(false);
            return backing.VirtualSize;
        }
        catch (Exception ex) when (ex is not OperationCanceledException and not OutOfMemoryException)
        {
            throw new CliException($"{img}: {ex.Message.TrimEnd('.')}. Could not open backing image.", ex);
        }
    }

    private static void CreateQcow2(string img, Qcow2CreateOptions options, string? hostPreallocation)
    {
        string? dataFile = options.DataFile is null ? null
            : Path.IsPathRooted(options.DataFile) ? options.DataFile
            : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(img)) ?? ".", options.DataFile);
        bool dataFileExisted = dataFile is not null && File.Exists(dataFile);
        // Both files are replaced below: refuse before touching either if another process has one open.
        using var inUse = File.Exists(img) ? ImageLock.Acquire(img, LockMode.Creator) : null;
        using var dataInUse = dataFileExisted ? ImageLock.Acquire(dataFile!, LockMode.Creator) : null;
        string temp = TempBeside(img);
        try
        {
            ImageCreator.Create(temp, options);
            if (dataFileExisted)
            {
                // qemu-img recreates the data file: old bytes must not show through a raw data file.
                using var data = File.OpenHandle(dataFile!, FileMode.Open, FileAccess.Write);
                RandomAccess.SetLength(data, 0);
                RandomAccess.SetLength(data, options.Size);
            }
            if (hostPreallocation is not null)
            {
                AllocateHostFile(temp, hostPreallocation);
                if (dataFile is not null) AllocateHostFile(dataFile, hostPreallocation);
            }
            File.Move(temp, img, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// preallocation=falloc|full for qcow2: the file (laid out with metadata preallocation) gets host
    /// space for every byte, reserved (falloc; where the filesystem cannot, written as for full) or
    /// written (full: each chunk rewritten with what it holds, so metadata stays and holes become zeros).
    /// </summary>
    private static void AllocateHostFile(string path, string mode)
    {
        using var device = FileBlockDevice.Open(path, writable: true);
        long length = device.Length;
        if (mode == "falloc" && device.ReserveSpace(0, length)) { device.Flush(); return; }
        var chunk = new byte[1 << 20];
        for (long pos = 0; pos < length; pos += chunk.Length)
        {
            int n = (int)Math.Min(chunk.Length, length - pos);
            int read = device.Read(chunk.AsSpan(0, n), pos);
            chunk.AsSpan(read, n - read).Clear();
            device.Write(chunk.AsSpan(0, n), pos);
        }
        device.Flush();
    }

    private static void CreateRaw(string img, long size, string? preallocation)
    {
        if (preallocation is not (null or "off" or "falloc" or "full"))
            throw new CliException($"{img}: Unsupported preallocation mode: {preallocation}");
        string temp = TempBeside(img);
        try
        {
            var fileOptions = new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                // falloc reserves the blocks (fallocate) without writing them.
                PreallocationSize = preallocation == "falloc" ? size : 0,
            };
            using (var file = new FileStream(temp, fileOptions))
            {
                if (preallocation == "full")
                {
                    var zeros = new byte[1 << 20];
                    for (long pos = 0; pos < size; pos += zeros.Length)
                        file.Write(zeros, 0, (int)Math.Min(zeros.Length, size - pos));
                }
                file.SetLength(size);
                file.Flush(flushToDisk: true);
            }
            ReplaceWith(temp, img);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    // qemu-img create takes the "write" and "resize" locks on an existing file before it truncates
    // it: an image another process has open (q2a serve, qemu-nbd) is refused, not replaced.
    private static void ReplaceWith(string temp, string img)
    {
        using var inUse = File.Exists(img) ? ImageLock.Acquire(img, LockMode.Creator) : null;
        File.Move(temp, img, overwrite: true);
    }

    private static string TempBeside(string img) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(img)) ?? ".",
            $".{Path.GetFileName(img)}.q2a-create-{Environment.ProcessId}.tmp");
}
