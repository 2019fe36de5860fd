namespace Qcow2Actors.Format;

/// <summary>
/// The one exception every decoder in this assembly throws for malformed or unsupported
/// on-disk data. It names the offending field and its byte offset so an operator can find
/// the bad bytes with a hex dump.
/// </summary>
public sealed class Qcow2FormatException : Exception
{
    /// <summary>Creates the exception; the message is one line built from the three parts.</summary>
    /// <param name="field">The on-disk field name as FORMAT.md spells it (e.g. <c>l1_size</c>).</param>
    /// <param name="offset">Byte offset of the field: in the file when the caller supplied a base offset, else in the decoded span.</param>
    /// <param name="problem">What is wrong, without a trailing period.</param>
    public Qcow2FormatException(string field, long offset, string problem)
        : base($"invalid {field} at offset {offset} (0x{offset:X}): {problem}")
    {
        Field = field;
        Offset = offset;
        Problem = problem;
    }

    /// <summary>The on-disk field name, e.g. <c>cluster_bits</c>.</summary>
    public string Field { get; }

    /// <summary>Byte offset of the field (file offset when known, else offset within the decoded span).</summary>
    public long Offset { get; }

    /// <summary>The problem description alone, without the field and offset prefix.</summary>
    public string Problem { get; }
}
