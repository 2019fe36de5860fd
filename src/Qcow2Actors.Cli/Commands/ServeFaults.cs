using System.Collections.Concurrent;
using Qcow2Actors.Engine;

namespace Qcow2Actors.Cli.Commands;

/// <summary>
/// The faults of the images <c>q2a serve</c> serves: each is one stderr line naming the image
/// (as the user named it) when the engine reports it, and decides the exit status at the end.
/// </summary>
internal sealed class ServeFaults(TextWriter stderr)
{
    private readonly ConcurrentDictionary<string, ConcurrentBag<Qcow2ImageFaultKind>> _byPath = new(StringComparer.Ordinal);

    /// <summary>The observer to pass in <see cref="Qcow2OpenOptions.OnFault"/> for the image at <paramref name="path"/>.</summary>
    public Action<Qcow2ImageFault> For(string path) => fault =>
    {
        _byPath.GetOrAdd(path, _ => new ConcurrentBag<Qcow2ImageFaultKind>()).Add(fault.Kind);
        var what = fault.Kind switch
        {
            Qcow2ImageFaultKind.ReadOnly or Qcow2ImageFaultKind.Corrupt => "turned read-only",
            Qcow2ImageFaultKind.NoSpace => "is out of space",
            _ => "was not closed clean",
        };
        stderr.WriteLine($"q2a serve: image '{path}' {what}: {fault.Reason}");
        stderr.Flush();
    };

    /// <summary>True once the image turned read-only (failed fsync or journal write, corruption).</summary>
    public bool TurnedReadOnly(string path) => Has(path, k => k is Qcow2ImageFaultKind.ReadOnly or Qcow2ImageFaultKind.Corrupt);

    /// <summary>True once the engine reported that the image was closed without a clean checkpoint.</summary>
    public bool ClosedUnclean(string path) => Has(path, k => k == Qcow2ImageFaultKind.UncleanClose);

    /// <summary>True when the image did not end clean: it turned read-only or its close was not clean (running out of space alone is not).</summary>
    public bool Unclean(string path) => TurnedReadOnly(path) || ClosedUnclean(path);

    private bool Has(string path, Func<Qcow2ImageFaultKind, bool> match) =>
        _byPath.TryGetValue(path, out var kinds) && kinds.Any(match);
}
