using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Commands;

/// <summary>What <c>q2a convert</c> was asked to do (its command line, parsed).</summary>
internal sealed record ConvertRequest(string Source, string Target)
{
    /// <summary>The source as resolved from its spelling (nbd://, json:, --image-opts); null: <see cref="Source"/> as a plain argument.</summary>
    public Sources.ImageSpec? SourceSpec { get; init; }

    /// <summary>Sources after the first, concatenated after it in order (qemu-img convert A B C DST).</summary>
    public IReadOnlyList<string> MoreSources { get; init; } = [];

    /// <summary>How each of <see cref="MoreSources"/> is opened (null: as a host file name).</summary>
    public IReadOnlyList<Sources.ImageSpec>? MoreSourceSpecs { get; init; }

    /// <summary>qemu-img's default <c>-S</c>: zero runs of 4 KiB are holes.</summary>
    public const long DefaultSparseSize = 4096;
    /// <summary>qemu-img's default <c>-m</c>.</summary>
    public const int DefaultParallel = 8;
    /// <summary>The largest <c>-m</c> qemu-img takes.</summary>
    public const int MaxParallel = 16;
    /// <summary>The largest <c>-S</c> qemu-img takes (16 MiB, in whole sectors).</summary>
    public const long MaxSparseSize = 16 * 1024 * 1024;

    public string? Format { get; init; }
    public string OutFormat { get; init; } = "raw";
    public string? Snapshot { get; init; }
    public bool Progress { get; init; }
    public bool Compress { get; init; }
    public IReadOnlyList<string> Options { get; init; } = [];
    public string? BackingFile { get; init; }
    public string? BackingFormat { get; init; }
    /// <summary>-U: read the source sharing it with its writer.</summary>
    public bool ForceShare { get; init; }
    /// <summary>-n: the target exists and is written in place (not created, not truncated).</summary>
    public bool NoCreate { get; init; }
    /// <summary>-S: zero runs of this many bytes (on its grid) are not written; 0 writes everything.</summary>
    public long SparseSize { get; init; } = DefaultSparseSize;
    /// <summary>True when -S was given (copy offloading refuses it even at its default value).</summary>
    public bool SparseSizeGiven { get; init; }
    /// <summary>-W: writes may reach the target out of order.</summary>
    public bool OutOfOrder { get; init; }
    /// <summary>-m: copy requests in flight at once.</summary>
    public int Parallel { get; init; } = DefaultParallel;
    /// <summary>-t: the target's cache mode.</summary>
    public CacheMode TargetCache { get; init; } = CacheMode.Writeback;
    /// <summary>-T: the source's cache mode.</summary>
    public CacheMode SourceCache { get; init; } = CacheMode.Writeback;
    /// <summary>--target-is-zero: the existing target reads zeros, so zeros need not be written.</summary>
    public bool TargetIsZero { get; init; }
    /// <summary>--salvage: a source read error becomes zeros and a warning.</summary>
    public bool Salvage { get; init; }
    /// <summary>-C: copy offloading (accepted where qemu-img accepts it; the copy is the ordinary one).</summary>
    public bool CopyOffload { get; init; }
    /// <summary>-r: bytes per second the copy may write; 0 is no limit.</summary>
    public long RateLimit { get; init; }

    /// <summary>
    /// The option combinations qemu-img convert refuses before opening anything, with its messages,
    /// in its order.
    /// </summary>
    public void Validate()
    {
        if (MoreSources.Count > 0 && Snapshot is not null) throw new CliException("No support for concatenating multiple snapshot");
        if (MoreSources.Count > 0 && BackingFile is not null)
            throw new CliException("Having a backing file for the target makes no sense when concatenating multiple input images");
        if (TargetIsZero && !NoCreate) throw new CliException("--target-is-zero requires use of -n flag");
        if (CopyOffload && Compress) throw new CliException("Cannot enable copy offloading when -c is used");
        if (CopyOffload && SparseSizeGiven) throw new CliException("Cannot enable copy offloading when -S is used");
        if (CopyOffload && Salvage) throw new CliException("Cannot use copy offloading in salvaging mode");
        if (NoCreate && Options.Count > 0) throw new CliException("-o has no effect when skipping image creation");
        if (TargetIsZero && BackingFile is not null)
            throw new CliException("Cannot use --target-is-zero when the destination image has a backing file");
    }

    /// <summary>Parses <c>-S</c> as qemu-img does: a size, a multiple of 512 up to 16 MiB, or 0.</summary>
    public static long ParseSparseSize(string text)
    {
        if (QemuSize.TryParse(text, out var value) != QemuSizeError.None)
            throw new CliException("Invalid buffer size for sparse output specified. " + SuffixHint);
        if (value > MaxSparseSize || value % 512 != 0)
            throw new CliException("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. "
                + "Select 0 to disable sparse detection (fully allocates output).");
        return (long)value;
    }

    /// <summary>Parses <c>-m</c>: 1 to 16.</summary>
    public static int ParseParallel(string text) =>
        int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) && n is >= 1 and <= MaxParallel
            ? n
            : throw new CliException($"Invalid number of coroutines. Allowed number of coroutines is between 1 and {MaxParallel}");

    /// <summary>Parses <c>-r</c> (convert and commit): a size in bytes per second; 0 is no limit.</summary>
    public static long ParseRateLimit(string text) =>
        QemuSize.TryParse(text, out var value) == QemuSizeError.None && value <= long.MaxValue
            ? (long)value
            : throw new CliException("Invalid rate limit specified. " + SuffixHint);

    // qemu-img prints this on two lines; q2a's errors are one line.
    private const string SuffixHint = "You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.";
}
