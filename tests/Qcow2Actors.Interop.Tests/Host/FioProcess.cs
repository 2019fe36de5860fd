using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>
/// fio running out of process on a job file, its JSON report written to a file. <see cref="Running"/> completes
/// when fio prints its first status line (its jobs are issuing I/O), so a test can act while the I/O is under way.
/// </summary>
internal sealed class FioProcess : IDisposable
{
    private readonly Process _process;
    private readonly string _report;
    private readonly StringBuilder _stderr = new();
    private readonly TaskCompletionSource _running = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _pump;

    private FioProcess(string jobFile)
    {
        _report = jobFile + ".json";
        var psi = new ProcessStartInfo("fio")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // With --output the report goes to the file and stdout carries only the status lines (\r-separated).
        foreach (var a in (string[])[jobFile, "--output-format=json", $"--output={_report}", "--eta=always", "--eta-newline=1"])
            psi.ArgumentList.Add(a);
        _process = new Process { StartInfo = psi };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
        _process.Start();
        _process.BeginErrorReadLine();
        _pump = Task.Run(PumpAsync);
    }

    /// <summary>Starts fio on <paramref name="jobFile"/>.</summary>
    public static FioProcess Start(string jobFile) => new(jobFile);

    /// <summary>Writes <paramref name="job"/> to <paramref name="path"/>, runs fio on it to the end and returns its report.</summary>
    public static async Task<FioReport> RunAsync(string path, string job, TimeSpan timeout)
    {
        await File.WriteAllTextAsync(path, job);
        using var fio = Start(path);
        return await fio.WaitAsync(timeout);
    }

    /// <summary>Completes when fio's jobs are running (its first status line), or when fio exits first.</summary>
    public Task Running => _running.Task;

    /// <summary>True once fio has exited.</summary>
    public bool HasExited => _process.HasExited;

    private async Task PumpAsync()
    {
        var seen = new StringBuilder();
        var buffer = new char[256];
        int n;
        while ((n = await _process.StandardOutput.ReadAsync(buffer)) > 0)
        {
            seen.Append(buffer, 0, n);
            if (seen.ToString().Contains("Jobs:", StringComparison.Ordinal)) _running.TrySetResult();
        }
        _running.TrySetResult();
    }

    /// <summary>Waits for fio to exit (at most <paramref name="timeout"/>) and returns its report; fio must exit 0.</summary>
    public async Task<FioReport> WaitAsync(TimeSpan timeout)
    {
        var (exitCode, report, stderr) = await ExitAsync(timeout);
        Assert.True(exitCode == 0, $"fio exit {exitCode}\n{stderr}");
        return report;
    }

    /// <summary>
    /// Waits (at most <paramref name="timeout"/>) for fio to exit and returns its exit code and report, whatever
    /// the exit code (a test that expects some jobs to fail checks each job's error itself).
    /// </summary>
    public async Task<(int ExitCode, FioReport Report, string StdErr)> ExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"fio did not finish in {timeout.TotalSeconds} s");
        }
        await _pump;
        string stderr;
        lock (_stderr) stderr = _stderr.ToString();
        var text = await File.ReadAllTextAsync(_report);
        int start = text.IndexOf('{', StringComparison.Ordinal);
        Assert.True(start >= 0, $"fio exit {_process.ExitCode} wrote no report\n{stderr}");
        using var doc = JsonDocument.Parse(text[start..]);
        return (_process.ExitCode, new FioReport(doc.RootElement.Clone()), stderr);
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            _process.WaitForExit(10_000);
        }
        _process.Dispose();
    }
}

/// <summary>fio's JSON report, summed over its jobs.</summary>
internal sealed record FioReport(JsonElement Json)
{
    private IEnumerable<JsonElement> Jobs => Json.GetProperty("jobs").EnumerateArray();

    /// <summary>Every job's error (0 when it had none).</summary>
    public IReadOnlyList<int> Errors => [.. Jobs.Select(j => j.GetProperty("error").GetInt32())];

    /// <summary>Read and write operations completed.</summary>
    public long Ops => Jobs.Sum(j => j.GetProperty("read").GetProperty("total_ios").GetInt64() + j.GetProperty("write").GetProperty("total_ios").GetInt64());

    /// <summary>Bytes read and written.</summary>
    public long Bytes => Jobs.Sum(j => j.GetProperty("read").GetProperty("io_bytes").GetInt64() + j.GetProperty("write").GetProperty("io_bytes").GetInt64());

    /// <summary>Read and write operations per second.</summary>
    public double Iops => Jobs.Sum(j => j.GetProperty("read").GetProperty("iops").GetDouble() + j.GetProperty("write").GetProperty("iops").GetDouble());
}
