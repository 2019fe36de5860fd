using System.Globalization;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// Runs qemu-io command lines (<c>read</c>, <c>write</c>, <c>discard</c>, <c>flush</c>,
/// <c>length</c>, <c>abort</c>, <c>quit</c> and their one-letter aliases) against an
/// <see cref="IIoTarget"/> with qemu-io's syntax, checks and messages: usage and I/O errors on
/// stdout, argument-count, unknown-command and getopt errors on stderr. A failed command does
/// not stop the ones after it; any failure makes the exit code 1.
/// Over 450 lines because each command's option parsing, checks and qemu-io wording sit together:
/// split per command, the shared getopt and size rules would have to be passed around.
/// </summary>
internal sealed class IoInterpreter
{
    /// <summary>qemu's BDRV_REQUEST_MAX_BYTES: the largest single request (INT_MAX rounded down to a sector).</summary>
    public const long MaxRequestBytes = 2147483136;

    private const int Sector = 512;
    private const byte DefaultWritePattern = 0xcd;

    private sealed record CommandInfo(string Name, string Args, string OneLine, int ArgMin, int ArgMax, bool NeedsWrite)
    {
        public string Usage => Args.Length == 0 ? $"{Name} -- {OneLine}" : $"{Name} {Args} -- {OneLine}";
    }

    private static readonly CommandInfo Read = new("read", "[-abCqv] [-P pattern [-s off] [-l len]] off len",
        "reads a number of bytes at a specified offset", 2, -1, false);
    private static readonly CommandInfo Write = new("write", "[-bcCfnquz] [-P pattern | -s source_file] off len",
        "writes a number of bytes at a specified offset", 2, -1, true);
    private static readonly CommandInfo Discard = new("discard", "[-Cq] off len",
        "discards a number of bytes at a specified offset", 2, -1, true);
    private static readonly CommandInfo Flush = new("flush", "", "flush all in-core file state to disk", 0, 0, false);
    private static readonly CommandInfo Length = new("length", "", "gets the length of the current file", 0, 0, false);
    private static readonly CommandInfo Abort = new("abort", "", "simulate a program crash using abort(3)", 0, 0, false);
    private static readonly CommandInfo Quit = new("quit", "", "exit the program", 0, -1, false);

    private static readonly Dictionary<string, CommandInfo> Commands = new(StringComparer.Ordinal)
    {
        ["read"] = Read, ["r"] = Read,
        ["write"] = Write, ["w"] = Write,
        ["discard"] = Discard, ["d"] = Discard,
        ["flush"] = Flush, ["f"] = Flush,
        ["length"] = Length, ["l"] = Length,
        ["abort"] = Abort,
        ["quit"] = Quit, ["q"] = Quit,
    };

    private readonly IIoTarget _target;
    private readonly TextWriter _out;
    private readonly TextWriter _err;
    private readonly Func<ValueTask> _abort;
    private readonly TimeProvider _clock;
    private readonly bool _debug = Environment.GetEnvironmentVariable("Q2A_DEBUG") == "1";

    /// <param name="target">The open image.</param>
    /// <param name="stdout">Where reports, dumps and qemu-io's stdout messages go.</param>
    /// <param name="stderr">Where qemu-io's stderr messages go.</param>
    /// <param name="abort">What <c>abort</c> does: the CLI kills the process; tests record the call.</param>
    /// <param name="clock">Measures each request for the timing line; tests pass a fixed clock.</param>
    public IoInterpreter(IIoTarget target, TextWriter stdout, TextWriter stderr, Func<ValueTask> abort, TimeProvider? clock = null)
    {
        _target = target;
        _out = stdout;
        _err = stderr;
        _abort = abort;
        _clock = clock ?? TimeProvider.System;
    }

    /// <summary>Set once <c>quit</c> (or <c>abort</c>, when it returns) ran; later commands are skipped.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Runs every command in order and returns qemu-io's exit code: 1 if any failed, else 0.</summary>
    public async Task<int> RunAsync(IEnumerable<string> commandLines, CancellationToken ct)
    {
        bool failed = false;
        foreach (var line in commandLines)
        {
            if (Stopped) break;
            if (!await ExecuteAsync(line, ct).ConfigureAwait(false)) failed = true;
        }
        await _out.FlushAsync(ct).ConfigureAwait(false);
        return failed ? 1 : 0;
    }

    /// <summary>Runs one command line; false when it failed (qemu-io's negative return).</summary>
    public async Task<bool> ExecuteAsync(string commandLine, CancellationToken ct)
    {
        // qemu-io's breakline: words separated by spaces, no quoting.
        var argv = commandLine.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (argv.Length == 0) return true;
        if (!Commands.TryGetValue(argv[0], out var info))
        {
            await _err.WriteLineAsync($"command \"{argv[0]}\" not found").ConfigureAwait(false);
            return false;
        }
        int argc = argv.Length - 1;
        if (argc < info.ArgMin || (info.ArgMax != -1 && argc > info.ArgMax))
        {
            string expected = info.ArgMin == info.ArgMax ? $"{info.ArgMin} arguments"
                : info.ArgMax == -1 ? $"at least {info.ArgMin} arguments"
                : $"between {info.ArgMin} and {info.ArgMax} arguments";
            await _err.WriteLineAsync($"bad argument count {argc} to {argv[0]}, expected {expected}").ConfigureAwait(false);
            return false;
        }
        if (info.NeedsWrite && _target.IsReadOnly)
        {
            await _err.WriteLineAsync("q2a: Block node is read-only").ConfigureAwait(false);
            return false;
        }
        return info.Name switch
        {
            "read" => await ReadAsync(argv, ct).ConfigureAwait(false),
            "write" => await WriteAsync(argv, ct).ConfigureAwait(false),
            "discard" => await DiscardAsync(argv, ct).ConfigureAwait(false),
            "flush" => await FlushAsync(ct).ConfigureAwait(false),
            "length" => await LengthAsync().ConfigureAwait(false),
            "abort" => await AbortAsync().ConfigureAwait(false),
            _ => Stop(),
        };
    }

    private bool Stop()
    {
        Stopped = true;
        return true;
    }

    private async Task<bool> AbortAsync()
    {
        // qemu-io's stdout dies with the process; ours is flushed first so a crash test sees what ran.
        await _out.FlushAsync().ConfigureAwait(false);
        await _err.FlushAsync().ConfigureAwait(false);
        await _abort().ConfigureAwait(false);
        Stopped = true;
        return true;
    }

    private async Task<bool> LengthAsync()
    {
        await _out.WriteLineAsync(IoReport.Bytes(_target.Length)).ConfigureAwait(false);
        return true;
    }

    private async Task<bool> FlushAsync(CancellationToken ct)
    {
        try
        {
            await _target.FlushAsync(ct).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // qemu-io's flush prints nothing on failure; say why on stderr rather than fail silently.
            await _err.WriteLineAsync($"q2a: flush failed: {StrError(ex)}").ConfigureAwait(false);
            await DebugAsync(ex).ConfigureAwait(false);
            return false;
        }
    }

    private async Task<bool> ReadAsync(string[] argv, CancellationToken ct)
    {
        bool machine = false, quiet = false, verbose = false, vmstate = false, patternSet = false, lengthSet = false, startSet = false;
        int pattern = 0;
        long patternOffset = 0, patternCount = 0;
        var parsed = await GetOptAsync(argv, Read, "bCl:pP:qs:v", async (c, arg) =>
        {
            switch (c)
            {
                case 'b': vmstate = true; break;
                case 'C': machine = true; break;
                case 'q': quiet = true; break;
                case 'v': verbose = true; break;
                case 'p': break;
                case 'P':
                    patternSet = true;
                    pattern = await ParsePatternAsync(arg!).ConfigureAwait(false);
                    return pattern >= 0;
                case 'l':
                    lengthSet = true;
                    patternCount = await ParseNumberAsync(arg!).ConfigureAwait(false);
                    return patternCount >= 0;
                case 's':
                    startSet = true;
                    patternOffset = await ParseNumberAsync(arg!).ConfigureAwait(false);
                    return patternOffset >= 0;
                default: return false;
            }
            return true;
        }).ConfigureAwait(false);
        if (parsed is not { Count: 2 } operands) return await UsageUnlessReportedAsync(parsed, Read).ConfigureAwait(false);

        if (await ParseRangeAsync(operands).ConfigureAwait(false) is not (var offset, var count)) return false;
        if (!patternSet && (lengthSet || startSet)) return await UsageAsync(Read).ConfigureAwait(false);
        if (!lengthSet) patternCount = count - patternOffset;
        if (patternCount < 0 || patternCount + patternOffset > count)
        {
            await _out.WriteLineAsync("pattern verification range exceeds end of read data").ConfigureAwait(false);
            return false;
        }
        if (vmstate && !await SectorAlignedAsync(offset, count).ConfigureAwait(false)) return false;

        var buffer = new byte[count];
        if (await TimedAsync("read", async () =>
            {
                if (vmstate) throw new NotSupportedException("q2a has no VM state area");
                await _target.ReadAsync(offset, buffer, ct).ConfigureAwait(false);
            }).ConfigureAwait(false) is not { } elapsed) return false;

        bool ok = true;
        if (patternSet)
        {
            var region = buffer.AsSpan((int)patternOffset, (int)patternCount);
            if (region.IndexOfAnyExcept((byte)pattern) >= 0)
            {
                await _out.WriteLineAsync($"Pattern verification failed at offset {offset + patternOffset}, {patternCount} bytes").ConfigureAwait(false);
                ok = false;
            }
        }
        if (quiet) return ok;
        if (verbose) await _out.WriteAsync(IoReport.Dump(buffer, offset)).ConfigureAwait(false);
        await _out.WriteAsync(IoReport.Format("read", elapsed, offset, count, count, 1, machine)).ConfigureAwait(false);
        return ok;
    }

    private async Task<bool> WriteAsync(string[] argv, CancellationToken ct)
    {
        bool machine = false, quiet = false, vmstate = false, compressed = false, fua = false, noFallback = false, unmap = false, zero = false;
        bool patternSet = false;
        string? sourceFile = null;
        int pattern = DefaultWritePattern;
        var parsed = await GetOptAsync(argv, Write, "bcCfnpP:qs:uz", async (c, arg) =>
        {
            switch (c)
            {
                case 'b': vmstate = true; break;
                case 'c': compressed = true; break;
                case 'C': machine = true; break;
                case 'f': fua = true; break;
                case 'n': noFallback = true; break;
                case 'p': break;
                case 'P':
                    patternSet = true;
                    pattern = await ParsePatternAsync(arg!).ConfigureAwait(false);
                    return pattern >= 0;
                case 'q': quiet = true; break;
                case 's': sourceFile = arg; break;
                case 'u': unmap = true; break;
                case 'z': zero = true; break;
                default: return false;
            }
            return true;
        }).ConfigureAwait(false);
        if (parsed is not { Count: 2 } operands) return await UsageUnlessReportedAsync(parsed, Write).ConfigureAwait(false);

        string? conflict =
            vmstate && zero ? "-b and -z cannot be specified at the same time"
            : fua && vmstate ? "-f and -b cannot be specified at the same time"
            : noFallback && !zero ? "-n requires -z to be specified"
            : unmap && !zero ? "-u requires -z to be specified"
            : (zero ? 1 : 0) + (patternSet ? 1 : 0) + (sourceFile is null ? 0 : 1) > 1 ? "Only one of -z, -P, and -s can be specified at the same time"
            : null;
        if (conflict is not null)
        {
            await _out.WriteLineAsync(conflict).ConfigureAwait(false);
            return false;
        }

        // write -z -n allocates no buffer, so qemu-io lifts the cap; with -z alone it says how.
        if (await ParseRangeAsync(operands, unbounded: zero && noFallback, capNote: zero ? " without -n" : "").ConfigureAwait(false)
            is not (var offset, var count)) return false;
        if ((vmstate || compressed) && !await SectorAlignedAsync(offset, count).ConfigureAwait(false)) return false;

        byte[]? buffer = null;
        if (!zero)
        {
            buffer = sourceFile is null ? Filled(count, (byte)pattern) : await FromFileAsync(sourceFile, count, ct).ConfigureAwait(false);
            if (buffer is null) return false;
        }

        if (await TimedAsync("write", async () =>
            {
                if (vmstate) throw new NotSupportedException("q2a has no VM state area");
                if (zero) await _target.WriteZeroesAsync(offset, count, unmap, fua, ct).ConfigureAwait(false);
                else if (compressed) await _target.WriteCompressedAsync(offset, buffer, ct).ConfigureAwait(false);
                else await _target.WriteAsync(offset, buffer, fua, ct).ConfigureAwait(false);
            }).ConfigureAwait(false) is not { } elapsed) return false;
        if (!quiet) await _out.WriteAsync(IoReport.Format("wrote", elapsed, offset, count, count, 1, machine)).ConfigureAwait(false);
        return true;
    }

    private async Task<bool> DiscardAsync(string[] argv, CancellationToken ct)
    {
        bool machine = false, quiet = false;
        var parsed = await GetOptAsync(argv, Discard, "Cq", (c, _) =>
        {
            if (c == 'C') machine = true;
            else if (c == 'q') quiet = true;
            else return Task.FromResult(false);
            return Task.FromResult(true);
        }).ConfigureAwait(false);
        if (parsed is not { Count: 2 } operands) return await UsageUnlessReportedAsync(parsed, Discard).ConfigureAwait(false);

        if (await ParseRangeAsync(operands).ConfigureAwait(false) is not (var offset, var count)) return false;
        if (await TimedAsync("discard", () => _target.DiscardAsync(offset, count, ct).AsTask()).ConfigureAwait(false)
            is not { } elapsed) return false;
        if (!quiet) await _out.WriteAsync(IoReport.Format("discard", elapsed, offset, count, count, 1, machine)).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Runs one request and times it; on failure prints qemu-io's "<paramref name="verb"/> failed:
    /// strerror" line and returns null. Cancellation is not a failure of the request: it propagates.
    /// </summary>
    private async Task<TimeSpan?> TimedAsync(string verb, Func<Task> request)
    {
        long start = _clock.GetTimestamp();
        try
        {
            await request().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // As qemu-io reports a corruption event (what the image would have lost, and that it is
            // now marked corrupt) on stderr before the errno line.
            if (ex is Engine.Qcow2ImageCorruptException) await _err.WriteLineAsync($"q2a: {ex.Message}").ConfigureAwait(false);
            await _out.WriteLineAsync($"{verb} failed: {StrError(ex)}").ConfigureAwait(false);
            await DebugAsync(ex).ConfigureAwait(false);
            return null;
        }
        return _clock.GetElapsedTime(start);
    }

    /// <summary>
    /// GNU getopt as qemu-io uses it: options may follow operands, clusters like "-vq", an
    /// option argument attached ("-P0xab") or in the next word (even one starting with '-'),
    /// "--" ends options. Returns the operands, or null after printing an error (a handler
    /// returning false has printed its own; an unknown option or a missing argument prints
    /// getopt's line on stderr and the usage on stdout).
    /// </summary>
    private async Task<List<string>?> GetOptAsync(string[] argv, CommandInfo info, string optString, Func<char, string?, Task<bool>> handle)
    {
        var operands = new List<string>();
        for (int i = 1; i < argv.Length; i++)
        {
            string word = argv[i];
            if (word == "--")
            {
                operands.AddRange(argv.Skip(i + 1));
                break;
            }
            if (word.Length < 2 || word[0] != '-')
            {
                operands.Add(word);
                continue;
            }
            for (int j = 1; j < word.Length; j++)
            {
                char c = word[j];
                int at = c == ':' ? -1 : optString.IndexOf(c, StringComparison.Ordinal);
                if (at < 0)
                {
                    await _err.WriteLineAsync($"{argv[0]}: invalid option -- '{c}'").ConfigureAwait(false);
                    await UsageAsync(info).ConfigureAwait(false);
                    return null;
                }
                string? arg = null;
                if (at + 1 < optString.Length && optString[at + 1] == ':')
                {
                    if (j + 1 < word.Length) arg = word[(j + 1)..];
                    else if (i + 1 < argv.Length) arg = argv[++i];
                    else
                    {
                        await _err.WriteLineAsync($"{argv[0]}: option requires an argument -- '{c}'").ConfigureAwait(false);
                        await UsageAsync(info).ConfigureAwait(false);
                        return null;
                    }
                    j = word.Length;
                }
                if (!await handle(c, arg).ConfigureAwait(false)) return null;
            }
        }
        return operands;
    }

    // A null parse already printed its error; a wrong number of operands prints the usage.
    private async Task<bool> UsageUnlessReportedAsync(List<string>? parsed, CommandInfo info) =>
        parsed is not null && await UsageAsync(info).ConfigureAwait(false);

    private async Task<bool> UsageAsync(CommandInfo info)
    {
        await _out.WriteLineAsync(info.Usage).ConfigureAwait(false);
        return false;
    }

    /// <summary>
    /// The offset and count operands of read, write and discard as qemu-io checks them: both
    /// numbers, and the count at most <see cref="MaxRequestBytes"/> unless <paramref name="unbounded"/>.
    /// Null after printing why not.
    /// </summary>
    private async Task<(long Offset, long Count)?> ParseRangeAsync(List<string> operands, bool unbounded = false, string capNote = "")
    {
        long offset = await ParseNumberAsync(operands[0]).ConfigureAwait(false);
        if (offset < 0) return null;
        long count = await ParseNumberAsync(operands[1]).ConfigureAwait(false);
        if (count < 0) return null;
        if (count > MaxRequestBytes && !unbounded)
        {
            await _out.WriteLineAsync($"length cannot exceed {MaxRequestBytes}{capNote}, given {operands[1]}").ConfigureAwait(false);
            return null;
        }
        return (offset, count);
    }

    /// <summary>qemu-io's cvtnum plus print_cvtnum_err: the value, or -1 after printing why not.</summary>
    private async Task<long> ParseNumberAsync(string text)
    {
        var error = QemuSize.TryParse(text, out var value);
        if (error == QemuSizeError.None && value > long.MaxValue) error = QemuSizeError.Range;
        switch (error)
        {
            case QemuSizeError.None:
                return (long)value;
            case QemuSizeError.Range:
                await _out.WriteLineAsync($"Parsing error: argument too large -- {text}").ConfigureAwait(false);
                return -1;
            default:
                await _out.WriteLineAsync($"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {text}").ConfigureAwait(false);
                return -1;
        }
    }

    /// <summary>qemu-io's parse_pattern: strtol base 0 (0x hex, 0 octal), 0..255, nothing after.</summary>
    private async Task<int> ParsePatternAsync(string text)
    {
        int? value = ParsePattern(text);
        if (value is null) await _out.WriteLineAsync($"{text} is not a valid pattern byte").ConfigureAwait(false);
        return value ?? -1;
    }

    /// <summary>A pattern byte as qemu-io reads it, or null.</summary>
    internal static int? ParsePattern(string text)
    {
        var s = text.AsSpan().TrimStart();
        bool negative = false;
        if (s.Length > 0 && (s[0] == '+' || s[0] == '-')) { negative = s[0] == '-'; s = s[1..]; }
        int radix = 10;
        if (s.Length > 2 && s[0] == '0' && (s[1] | 0x20) == 'x') { radix = 16; s = s[2..]; }
        else if (s.Length > 1 && s[0] == '0') { radix = 8; s = s[1..]; }
        if (s.Length == 0) return null;
        long value = 0;
        foreach (char ch in s)
        {
            int digit = char.IsAsciiDigit(ch) ? ch - '0' : char.IsAsciiLetter(ch) ? (ch | 0x20) - 'a' + 10 : 99;
            if (digit >= radix) return null;
            value = value * radix + digit;
            if (value > 255) return null;
        }
        return negative && value != 0 ? null : (int)value;
    }

    private async Task<bool> SectorAlignedAsync(long offset, long count)
    {
        if (offset % Sector != 0)
        {
            await _out.WriteLineAsync($"{offset} is not a sector-aligned value for 'offset'").ConfigureAwait(false);
            return false;
        }
        if (count % Sector != 0)
        {
            await _out.WriteLineAsync($"{count} is not a sector-aligned value for 'count'").ConfigureAwait(false);
            return false;
        }
        return true;
    }

    private static byte[] Filled(long count, byte value)
    {
        var buffer = new byte[count];
        Array.Fill(buffer, value);
        return buffer;
    }

    // qemu_io_alloc_from_file: the file's bytes, repeated to fill the request.
    private async Task<byte[]?> FromFileAsync(string path, long count, CancellationToken ct)
    {
        byte[] source;
        try
        {
            source = await File.ReadAllBytesAsync(path, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            await _err.WriteLineAsync($"{path}: {StrError(ex)}").ConfigureAwait(false);
            return null;
        }
        if (source.Length == 0)
        {
            await _err.WriteLineAsync($"{path}: file is empty").ConfigureAwait(false);
            return null;
        }
        var buffer = new byte[count];
        for (long pos = 0; pos < count; pos += source.Length)
            source.AsSpan(0, (int)Math.Min(source.Length, count - pos)).CopyTo(buffer.AsSpan((int)pos));
        return buffer;
    }

    /// <summary>The strerror text qemu-io would print for the errno QEMU's block layer returns in this case.</summary>
    internal static string StrError(Exception ex) => ex switch
    {
        // Out-of-range requests are EIO in QEMU's block layer (blk_check_byte_request).
        ArgumentOutOfRangeException => "Input/output error",
        FileNotFoundException or DirectoryNotFoundException => "No such file or directory",
        UnauthorizedAccessException => "Permission denied",
        NotSupportedException => "Operation not supported",
        ArgumentException => "Invalid argument",
        IOException io when io.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase) => "No space left on device",
        _ => "Input/output error",
    };

    private async Task DebugAsync(Exception ex)
    {
        if (_debug) await _err.WriteLineAsync(ex.ToString()).ConfigureAwait(false);
    }
}
