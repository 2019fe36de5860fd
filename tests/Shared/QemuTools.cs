using System.Diagnostics;
using System.Text;

namespace Qcow2Actors.Tests.Shared;

/// <summary>
/// Locates QEMU's command-line tools (the oracle) and runs them. On a developer box
/// without qemu-utils the tests that need them skip with a visible reason; when
/// CI=true they run anyway, so a missing tool fails the build instead of hiding it.
/// </summary>
public static class QemuTools
{
    public static bool IsCi =>
        string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static string? Find(string tool)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var path = Path.Combine(dir, tool);
            if (File.Exists(path)) return path;
        }
        return null;
    }

    /// <summary>Null when every tool is present (or CI=true), else the skip reason.</summary>
    public static string? SkipReason(params string[] tools)
    {
        if (IsCi) return null;
        var missing = tools.Where(t => Find(t) is null).ToArray();
        return missing.Length == 0 ? null
            : $"needs {string.Join(", ", missing)} (apt-get install qemu-utils libnbd-bin fio); set CI=true to make this a failure";
    }

    public sealed record Result(int ExitCode, string StdOut, string StdErr)
    {
        public Result EnsureSuccess()
        {
            if (ExitCode != 0) throw new InvalidOperationException($"exit {ExitCode}: {StdErr}{StdOut}");
            return this;
        }
    }

    /// <summary>Runs a tool with arguments (no shell), waiting at most <paramref name="timeoutSeconds"/>.</summary>
    public static Result Run(string tool, IEnumerable<string> args, int timeoutSeconds = 120, string? stdin = null)
    {
        var psi = new ProcessStartInfo(Find(tool) ?? tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {tool}");
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (stdin is not null) { p.StandardInput.Write(stdin); p.StandardInput.Close(); }
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish in {timeoutSeconds}s");
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.ToString(), stderr.ToString());
    }

    public static Result Run(string tool, params string[] args) => Run(tool, (IEnumerable<string>)args);

    public static Result QemuImg(params string[] args) => Run("qemu-img", args);

    public static Result QemuIo(params string[] args) => Run("qemu-io", args);

    /// <summary>The oracle's verdict: `qemu-img check` finds 0 errors and 0 leaks (exit 0).</summary>
    /// <param name="image">The qcow2 image.</param>
    /// <param name="forceShare">Peek at an image this process still holds open for writing (qemu-img's -U).</param>
    public static void AssertCheckClean(string image, bool forceShare = false)
    {
        var check = forceShare ? QemuImg("check", "-U", image) : QemuImg("check", image);
        Assert.True(check.ExitCode == 0, $"qemu-img check {image}: {check.StdOut}{check.StdErr}");
    }

    /// <summary>`qemu-img compare` says the qcow2 image holds exactly <paramref name="model"/> (written as raw into <paramref name="scratchDir"/>).</summary>
    public static void AssertSameContent(string image, byte[] model, string scratchDir)
    {
        var raw = System.IO.Path.Combine(scratchDir, "model.raw");
        File.WriteAllBytes(raw, model);
        var cmp = QemuImg("compare", "-f", "qcow2", "-F", "raw", image, raw);
        Assert.True(cmp.ExitCode == 0, $"qemu-img compare {image}: {cmp.StdOut}{cmp.StdErr}");
    }

    /// <summary>
    /// Runs our own CLI out of process (q2a.dll is copied next to the test assembly by the
    /// project reference), so exit codes and stderr are exactly what a user sees.
    /// </summary>
    public static Result Q2a(params string[] args)
    {
        var dll = System.IO.Path.Combine(AppContext.BaseDirectory, "q2a.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException("q2a.dll is not beside the tests; reference Qcow2Actors.Cli", dll);
        return Run("dotnet", new[] { dll }.Concat(args), timeoutSeconds: 300);
    }
}

/// <summary>A fact that needs qemu-img and qemu-io; skips with the reason when they are absent outside CI.</summary>
public sealed class QemuFactAttribute : FactAttribute
{
    public QemuFactAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io"); }
}

/// <summary>A theory that needs qemu-img and qemu-io; skips with the reason when they are absent outside CI.</summary>
public sealed class QemuTheoryAttribute : TheoryAttribute
{
    public QemuTheoryAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io"); }
}

/// <summary>A temporary directory removed at dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("q2a-test-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } catch (UnauthorizedAccessException) { } }
}
