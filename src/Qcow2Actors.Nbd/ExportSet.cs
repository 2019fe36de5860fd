namespace Qcow2Actors.Nbd;

/// <summary>An immutable snapshot of the served exports: insertion order and lookup by name.</summary>
internal sealed class ExportSet(IReadOnlyList<INbdExport> inOrder, Dictionary<string, INbdExport> byName)
{
    public static readonly ExportSet Empty = new([], new(StringComparer.Ordinal));
    public IReadOnlyList<INbdExport> InOrder { get; } = inOrder;
    public IReadOnlyDictionary<string, INbdExport> ByName { get; } = byName;

    public ExportSet With(INbdExport export) =>
        new([.. InOrder, export], new(ByName, StringComparer.Ordinal) { [export.Name] = export });

    public ExportSet Without(INbdExport export)
    {
        var byName = new Dictionary<string, INbdExport>(ByName, StringComparer.Ordinal);
        byName.Remove(export.Name);
        return new([.. InOrder.Where(e => !ReferenceEquals(e, export))], byName);
    }
}
