using System.Globalization;
using Qcow2Actors.CrashLab;

namespace Qcow2Actors.CrashLab.Tests.Recording;

/// <summary>A crash log read back (with crashcheck's reader) into what a test compares: the header and one line per operation.</summary>
internal sealed record CrashLogTestReader(string ImagePath, string BaseSnapshot, long VirtualSize, DateTimeOffset Started, bool Truncated,
    IReadOnlyList<string> Operations, byte[] FirstWriteData)
{
    /// <summary>
    /// Reads <paramref name="path"/>; each operation is <c>KIND OFFSET+LENGTH[ unmap][ fua] ok|failed|open</c> (a flush:
    /// <c>flush ok</c>), in Begin order; <c>open</c> when the log has no completion for it.
    /// </summary>
    public static CrashLogTestReader Read(string path)
    {
        var log = CrashLogReader.Read(path);
        var operations = log.Operations.Select(Describe).ToList();
        var first = log.Operations.FirstOrDefault(o => o.Kind == CrashLogRecordKind.Write)?.Data.ToArray() ?? [];
        return new CrashLogTestReader(log.Header.ImagePath, log.Header.BaseSnapshot, log.Header.VirtualSize, log.Header.Started,
            log.IsTruncated, operations, first);
    }

    public static string Describe(CrashLogOperation o)
    {
        var outcome = o.Ok switch { true => "ok", false => "failed", null => "open" };
        if (o.Kind == CrashLogRecordKind.Flush) return "flush " + outcome;
        var kind = o.Kind switch
        {
            CrashLogRecordKind.Write => "write",
            CrashLogRecordKind.WriteZeroes => "zero",
            CrashLogRecordKind.Trim => "trim",
            _ => o.Kind.ToString(),
        };
        return string.Create(CultureInfo.InvariantCulture,
            $"{kind} {o.Offset}+{o.Length}{(o.MayUnmap ? " unmap" : "")}{(o.Fua ? " fua" : "")} {outcome}");
    }
}
