using System.Text.Json;
using System.Text.Json.Serialization;

namespace Qcow2Actors.Host.Auth;

/// <summary>
/// The control API's audit log: one JSON line per change and per refusal (who, what, when, result), appended
/// and flushed to disk before the reply leaves, so a client that saw its answer finds it logged. The one
/// owner of the file: writes are serialized here. Created mode 0600.
/// </summary>
internal sealed class AuditLog : IAsyncDisposable
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly TimeProvider _time;
    private readonly FileStream _file;

    public AuditLog(string path, TimeProvider time)
    {
        _time = time;
        Path = path;
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        var options = new FileStreamOptions { Mode = FileMode.Append, Access = FileAccess.Write, Share = FileShare.Read };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        _file = new FileStream(path, options);
    }

    public string Path { get; }

    /// <summary>Appends one record and flushes it to disk.</summary>
    public async Task WriteAsync(string who, string method, string route, string target, int status, string? code)
    {
        var record = new AuditRecord(_time.GetUtcNow(), who, method, route, target, status, code);
        var line = JsonSerializer.SerializeToUtf8Bytes(record, AuditJson.Default.AuditRecord);
        await _lock.WaitAsync();
        try
        {
            await _file.WriteAsync(line);
            _file.WriteByte((byte)'\n');
            await _file.FlushAsync();
            _file.Flush(flushToDisk: true);
        }
        finally
        {
            _lock.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _lock.WaitAsync();
        await _file.DisposeAsync();
        _lock.Dispose();
    }
}

/// <summary>One audit line: <c>time</c>, <c>who</c>, <c>method</c>, <c>route</c> (the pattern), <c>target</c> (the path), <c>status</c>, <c>code</c> (an error's).</summary>
internal sealed record AuditRecord(DateTimeOffset Time, string Who, string Method, string Route, string Target, int Status, string? Code);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(AuditRecord))]
internal sealed partial class AuditJson : JsonSerializerContext;
