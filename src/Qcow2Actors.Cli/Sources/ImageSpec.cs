namespace Qcow2Actors.Cli.Sources;

/// <summary>
/// One image argument of info, map, compare, convert, check or io, resolved in one place from
/// every spelling qemu-img 7.2 accepts: a host path (unchanged behaviour), an NBD URI
/// (<see cref="NbdUri"/>), <c>json:{...}</c> (<see cref="JsonImageOptions"/>) or, with
/// <c>--image-opts</c>, <c>key=value,...</c> (<see cref="BlockOptions"/>); <c>tls-creds=</c> refers
/// to an <c>--object</c> (<see cref="SourceObjects"/>).
/// </summary>
internal sealed record ImageSpec
{
    /// <summary>The argument as given: what "Could not open '...'" names.</summary>
    public required string Argument { get; init; }

    /// <summary>The name qemu-img prints for the image (a host path as given, an NBD target as nbd://... or nbd+unix://...).</summary>
    public required string DisplayName { get; init; }

    /// <summary>The host file, or null for an NBD image.</summary>
    public string? Path { get; init; }

    /// <summary>The NBD export, or null for a host file.</summary>
    public NbdTarget? Nbd { get; init; }

    /// <summary>TLS credentials directory for <see cref="Nbd"/> (from <c>tls-creds=</c>), or null.</summary>
    public string? TlsDirectory { get; init; }

    /// <summary>"qcow2" or "raw" (from -f or driver=), or null to probe the qcow2 magic.</summary>
    public string? Format { get; init; }

    /// <summary>
    /// The format name qemu-img reports when it is not the one decoded: "nbd" when the NBD protocol
    /// driver is the top node (<c>driver=nbd</c>), whose bytes are then read as raw without probing.
    /// </summary>
    public string? FormatLabel { get; init; }

    /// <summary>True for an image on the host file system.</summary>
    public bool IsHostFile => Nbd is null;

    /// <summary>
    /// Resolves <paramref name="argument"/>: with <paramref name="imageOpts"/> as key=value options
    /// (then <paramref name="format"/> must be null, as qemu-img refuses -f with --image-opts), else as a
    /// json: object, an NBD URI or a host path. Errors are one <see cref="CliException"/> line in
    /// qemu-img's wording.
    /// </summary>
    public static ImageSpec Resolve(string argument, bool imageOpts, string? format, SourceObjects objects)
    {
        if (imageOpts && format is not null) throw new CliException("--image-opts and --format are mutually exclusive");
        try
        {
            if (imageOpts)
            {
                if (!argument.Contains('=', StringComparison.Ordinal))
                    throw new SourceException($"Cannot find device='{argument}' nor node-name='{argument}'");
                return BlockOptions.Resolve(argument, KeyValueOptions.Parse(argument), null, objects);
            }
            if (argument.StartsWith(JsonImageOptions.Prefix, StringComparison.Ordinal))
                return BlockOptions.Resolve(argument, JsonImageOptions.Parse(argument), format, objects);
            if (NbdUri.Parse(argument) is { } nbd)
                return new ImageSpec { Argument = argument, DisplayName = nbd.DisplayName, Nbd = nbd, Format = format };
            // Unknown NBD-like or URL schemes are protocols qemu does not know; any other name is a host path.
            if (NbdUri.LooksLikeProtocol(argument, out var scheme)
                && (scheme.StartsWith("nbd", StringComparison.Ordinal) || argument.Contains("://", StringComparison.Ordinal)))
                throw new SourceException($"Unknown protocol '{scheme}'");
            return new ImageSpec { Argument = argument, DisplayName = argument, Path = argument, Format = format };
        }
        catch (SourceException ex)
        {
            throw new CliException(ex.Whole ? ex.Message : $"Could not open '{argument}': {ex.Message}", ex);
        }
    }

    /// <summary>Resolves every <c>--object</c> value (checked before any image is opened).</summary>
    public static SourceObjects Objects(IEnumerable<string>? values)
    {
        try
        {
            return SourceObjects.Parse(values ?? []);
        }
        catch (SourceException ex)
        {
            throw new CliException(ex.Message, ex);
        }
    }
}
