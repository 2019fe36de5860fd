using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Qcow2Actors.Bench;

/// <summary>Runs <c>qemu-img create</c> and <c>qemu-img bench</c> as external processes.</summary>
internal static partial class QemuBench
{
    public static void Create(string path, long size, string? options = null)
    {
        var args = new List<string> { "create", "-q", "-f", "qcow2" };
        if (options is not null) { args.Add("-o"); args.Add(options); }
        args.AddRange([path, size.ToString(CultureInfo.InvariantCulture)]);
        Run(args);
    }

    /// <summary>
    /// <c>qemu-img bench -w -t CACHE -c COUNT -s SIZE -d 16 [-S STEP] [--flush-interval=N]</c>;
    /// returns the seconds qemu-img itself reports ("Run completed in X seconds.").
    /// </summary>
    public static double Run(string image, string cache, int count, string size, string? step, int flushInterval)
    {
        var args = new List<string> { "bench", "-w", "-f", "qcow2", "-t", cache, "-c", count.ToString(CultureInfo.InvariantCulture), "-s", size, "-d", "16" };
        if (step is not null) { args.Add("-S"); args.Add(step); }
        if (flushInterval > 0) args.Add($"--flush-interval={flushInterval}");
        args.Add(image);
        var output = Run(args);
        var m = Completed().Match(output);
        if (!m.Success) throw new InvalidOperationException($"unexpected qemu-img bench output: {output}");
        return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private static string Run(IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo("qemu-img") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start qemu-img");
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"qemu-img {string.Join(' ', psi.ArgumentList)}: exit {p.ExitCode}: {stderr.Result}");
        return stdout;
    }

    [GeneratedRegex(@"Run completed in ([0-9.]+) seconds")]
    private static partial Regex Completed();
}
