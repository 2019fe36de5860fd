namespace Qcow2Actors.Format;

/// <summary>
/// The one exception every decoder in this assembly throws for malformed or unsupported
/// on-disk data. It names the broken rule, the offending field and its byte offset so an
/// operator can find the bad bytes with a hex dump, and a tool can word the problem its own way.
/// </summary>
public sealed class Qcow2FormatException : Exception
{
    /// <summary>Creates the exception for a structure no specific rule covers (<see cref="Qcow2Rule.Malformed"/>).</summary>
    /// <param name="field">The on-disk field name as FORMAT.md spells it (e.g. <c>l1_size</c>).</param>
    /// <param name="offset">Byte offset of the field: in the file when the caller supplied a base offset, else in the decoded span.</param>
    /// <param name="problem">What is wrong, without a trailing period.</param>
    public Qcow2FormatException(string field, long offset, string problem)
        : this(Qcow2Rule.Malformed, field, offset, problem)
    {
    }

    /// <summary>Creates the exception; the message is one line built from field, offset and problem.</summary>
    /// <param name="rule">The rule the data breaks.</param>
    /// <param name="field">The on-disk field name as FORMAT.md spells it (e.g. <c>l1_size</c>).</param>
    /// <param name="offset">Byte offset of the field: in the file when the caller supplied a base offset, else in the decoded span.</param>
    /// <param name="problem">What is wrong, without a trailing period.</param>
    /// <param name="value">The offending value as stored (0 when the rule is about several fields).</param>
    /// <param name="index">Entry index within a table (snapshot, bitmap), or -1.</param>
    /// <param name="inner">The exception this one rewords, if any.</param>
    public Qcow2FormatException(Qcow2Rule rule, string field, long offset, string problem, ulong value = 0, int index = -1, Exception? inner = null)
        : base($"invalid {field} at offset {offset} (0x{offset:X}): {problem}", inner)
    {
        Rule = rule;
        Field = field;
        Offset = offset;
        Problem = problem;
        Value = value;
        Index = index;
    }

    /// <summary>The rule the data breaks.</summary>
    public Qcow2Rule Rule { get; }

    /// <summary>The on-disk field name, e.g. <c>cluster_bits</c>.</summary>
    public string Field { get; }

    /// <summary>Byte offset of the field (file offset when known, else offset within the decoded span).</summary>
    public long Offset { get; }

    /// <summary>The problem description alone, without the field and offset prefix.</summary>
    public string Problem { get; }

    /// <summary>
    /// The offending value as stored: the field's raw value, the extension type for
    /// <see cref="Qcow2Rule.ExtensionDuplicate"/>, the unnamed unsupported bits for
    /// <see cref="Qcow2Rule.UnsupportedIncompatibleFeature"/>.
    /// </summary>
    public ulong Value { get; }

    /// <summary>Entry index within a snapshot table or bitmap directory, or -1.</summary>
    public int Index { get; }

    /// <summary>
    /// For <see cref="Qcow2Rule.UnsupportedIncompatibleFeature"/>: names the image's feature name
    /// table gives the unsupported bits, in table order (bits without a name are in <see cref="Value"/>).
    /// </summary>
    public IReadOnlyList<string> FeatureNames { get; init; } = [];
}
