namespace Qcow2Actors.Chaos.Workloads;

/// <summary>The outcome of checking a recovered image against a <see cref="DiskModel"/>.</summary>
/// <param name="Ok">True when every byte is legal.</param>
/// <param name="Offset">The first illegal byte's guest offset, or null.</param>
/// <param name="Message">One line: "ok", or what was found at the offset, what was flushed there and by which op, and what later ops wrote.</param>
public sealed record CrashVerdict(bool Ok, long? Offset, string Message)
{
    /// <summary>The passing verdict.</summary>
    public static CrashVerdict Pass { get; } = new(true, null, "ok");

    /// <summary>Throws <see cref="CrashConsistencyException"/> (prefixed with <paramref name="context"/>) unless <see cref="Ok"/>.</summary>
    public void ThrowIfFailed(string? context = null)
    {
        if (!Ok) throw new CrashConsistencyException(context is null ? Message : $"{context}: {Message}", Offset);
    }

    /// <inheritdoc />
    public override string ToString() => Message;
}

/// <summary>A recovered image broke the crash contract: a flushed write is gone, or a byte holds a value nobody wrote.</summary>
public sealed class CrashConsistencyException : Exception
{
    /// <summary>Creates the exception for the first illegal byte at <paramref name="offset"/>.</summary>
    public CrashConsistencyException(string message, long? offset) : base(message) => Offset = offset;

    /// <summary>The first illegal byte's guest offset.</summary>
    public long? Offset { get; }
}

/// <summary>
/// Judges a recovered image: every byte must equal its value as of the last completed flush, or a
/// value some operation wrote after that flush (zeros too where a discard allows them), and a
/// completed FUA write must be there in full.
/// </summary>
public static class CrashVerifier
{
    /// <summary>Checks <paramref name="recovered"/> (the whole guest disk, read back after recovery) against <paramref name="model"/>.</summary>
    public static CrashVerdict Verify(DiskModel model, ReadOnlySpan<byte> recovered)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.FirstIllegalByte(recovered) is { } bad ? new CrashVerdict(false, bad.Offset, bad.Message) : CrashVerdict.Pass;
    }

    /// <summary>Reads the whole guest disk of <paramref name="recovered"/> and checks it against <paramref name="model"/>.</summary>
    public static async Task<CrashVerdict> VerifyAsync(DiskModel model, IChaosTarget recovered, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(recovered);
        if (recovered.VirtualSize != model.Size)
            return new CrashVerdict(false, Math.Min(recovered.VirtualSize, model.Size),
                $"recovered disk is {recovered.VirtualSize} bytes, the model {model.Size}");
        var image = new byte[model.Size];
        const int chunk = 1024 * 1024;
        for (var offset = 0; offset < image.Length; offset += chunk)
        {
            var n = Math.Min(chunk, image.Length - offset);
            await recovered.ReadAsync(offset, image.AsMemory(offset, n), cancellationToken);
        }
        return Verify(model, image);
    }
}
