using Qcow2Actors.Nbd;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.CrashLab.Tests.Recording;

/// <summary>
/// The recorder over a scripted export: every change is in the log before the image sees it and completed in the log
/// before its caller hears back, a FLUSH or FUA reply waits for the log to be durable, failures are logged as failed
/// with the image's error passed on, and everything else passes through unrecorded.
/// </summary>
public sealed class RecordingExportTests : IDisposable
{
    private static readonly CrashLogHeader Header = new("/images/disk.qcow2", "q2a-record-20261130T120000Z", 1 << 20, new DateTimeOffset(2026, 11, 30, 12, 0, 0, TimeSpan.Zero));
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private (RecordingExport Export, ScriptedExport Inner, string Log) Start(ScriptedExport? inner = null, Func<CrashLogWriter, ValueTask>? flushLog = null)
    {
        inner ??= new ScriptedExport();
        var path = _dir.File($"{Guid.NewGuid():N}.crashlog");
        var export = new RecordingExport(inner, CrashLogWriter.Create(path, Header)) { FlushLog = flushLog ?? (log => log.FlushAsync()) };
        return (export, inner, path);
    }

    private static IReadOnlyList<string> Operations(string log) => CrashLogTestReader.Read(log).Operations;

    [Fact]
    public async Task Every_change_is_logged_in_order_begun_before_the_image_sees_it_and_completed_before_the_reply()
    {
        var (export, inner, log) = Start();
        var seenAtIssue = new List<string>();
        // What the log held when each change reached the image: its own Begin last, not completed.
        inner.OnIssue = what => seenAtIssue.Add(Operations(log)[^1]);
        var data = Enumerable.Range(0, 4096).Select(i => (byte)i).ToArray();

        await export.WriteAsync(0, data, fua: false, CancellationToken.None);
        Assert.Equal("write 0+4096 ok", Operations(log)[^1]);
        await export.WriteZeroesAsync(8192, 4096, mayUnmap: true, fastZero: false, fua: false, CancellationToken.None);
        Assert.Equal("zero 8192+4096 unmap ok", Operations(log)[^1]);
        await export.TrimAsync(16384, 4096, fua: false, CancellationToken.None);
        Assert.Equal("trim 16384+4096 ok", Operations(log)[^1]);
        await export.FlushAsync(CancellationToken.None);
        Assert.Equal("flush ok", Operations(log)[^1]);
        await export.WriteAsync(65536, data, fua: true, CancellationToken.None);
        await export.WriteZeroesAsync(0, 512, mayUnmap: false, fastZero: false, fua: true, CancellationToken.None);
        await export.DisposeAsync();

        Assert.Equal(["write 0+4096 open", "zero 8192+4096 unmap open", "trim 16384+4096 open", "flush open", "write 65536+4096 fua open", "zero 0+512 fua open"], seenAtIssue);
        var read = CrashLogTestReader.Read(log);
        Assert.False(read.Truncated);
        Assert.Equal(["write 0+4096 ok", "zero 8192+4096 unmap ok", "trim 16384+4096 ok", "flush ok", "write 65536+4096 fua ok", "zero 0+512 fua ok"], read.Operations);
        Assert.Equal(data, read.FirstWriteData);
        // Sequential requests: each completion directly follows its begin.
        var records = CrashLogReader.Read(log).Records;
        Assert.Equal(12, records.Count);
        for (int i = 0; i < records.Count; i += 2)
        {
            Assert.NotEqual(CrashLogRecordKind.Complete, records[i].Kind);
            Assert.Equal(CrashLogRecordKind.Complete, records[i + 1].Kind);
            Assert.Equal(records[i].Id, records[i + 1].Id);
        }
        var written = new byte[4096];
        inner.Memory.Read(65536, written);
        Assert.Equal(data, written);
    }

    [Fact]
    public async Task An_inline_write_reaches_the_inner_exports_inline_path_and_is_logged_as_a_plain_write()
    {
        var (export, inner, log) = Start();
        var seenAtIssue = new List<string>();
        inner.OnIssue = what => seenAtIssue.Add(Operations(log)[^1]);
        var data = Enumerable.Range(0, 4096).Select(i => (byte)(i * 7)).ToArray();

        await export.WriteInlineAsync(8192, data, CancellationToken.None);
        await export.DisposeAsync();

        Assert.Equal(["issue inline write 8192+4096", "finished inline write 8192+4096"], inner.Events);
        Assert.Equal(["write 8192+4096 open"], seenAtIssue);
        Assert.Equal(["write 8192+4096 ok"], CrashLogTestReader.Read(log).Operations);
        var written = new byte[4096];
        inner.Memory.Read(8192, written);
        Assert.Equal(data, written);
    }

    [Fact]
    public async Task A_flush_or_fua_reply_waits_for_the_log_to_be_durable_and_a_plain_write_does_not_flush_it()
    {
        ScriptedExport inner = new();
        var (export, _, log) = Start(inner, async writer =>
        {
            inner.Add("log flushed");
            await writer.FlushAsync();
        });

        await export.WriteAsync(0, new byte[512], fua: false, CancellationToken.None);
        inner.Add("reply write");
        await export.FlushAsync(CancellationToken.None);
        inner.Add("reply flush");
        await export.WriteAsync(512, new byte[512], fua: true, CancellationToken.None);
        inner.Add("reply fua write");
        await export.TrimAsync(4096, 4096, fua: true, CancellationToken.None);
        inner.Add("reply fua trim");

        Assert.Equal(
        [
            "issue write 0+512", "finished write 0+512", "reply write",
            "issue flush", "finished flush", "log flushed", "reply flush",
            "issue write 512+512", "finished write 512+512", "log flushed", "reply fua write",
            "issue trim 4096+4096", "finished trim 4096+4096", "log flushed", "reply fua trim",
        ], inner.Events);
        await export.DisposeAsync();
        Assert.Equal(4, Operations(log).Count);
    }

    [Fact]
    public async Task A_failed_operation_is_logged_as_failed_and_the_images_error_reaches_the_caller()
    {
        var (export, inner, log) = Start();
        var noSpace = new NbdException(NbdError.NoSpace, "out of space");
        inner.FailNext(noSpace);
        Assert.Same(noSpace, await Assert.ThrowsAsync<NbdException>(() => export.WriteAsync(0, new byte[4096], fua: true, CancellationToken.None).AsTask()));
        var flushFailed = new IOException("fsync failed");
        inner.FailNext(flushFailed);
        Assert.Same(flushFailed, await Assert.ThrowsAsync<IOException>(() => export.FlushAsync(CancellationToken.None).AsTask()));
        inner.FailNext(new OperationCanceledException());
        await Assert.ThrowsAsync<OperationCanceledException>(() => export.TrimAsync(0, 4096, fua: false, CancellationToken.None).AsTask());
        await export.WriteAsync(0, new byte[512], fua: false, CancellationToken.None);
        await export.DisposeAsync();

        Assert.Equal(["write 0+4096 fua failed", "flush failed", "trim 0+4096 failed", "write 0+512 ok"], Operations(log));
    }

    [Fact]
    public async Task Reads_block_status_and_metadata_contexts_pass_through_unrecorded()
    {
        var (export, inner, log) = Start(new ScriptedExport { DirtyBitmaps = ["backup-1"], AllocationDepth = true });
        inner.Memory.Write(4096, [1, 2, 3]);
        var buffer = new byte[3];
        await export.ReadAsync(4096, buffer, CancellationToken.None);
        Assert.Equal([1, 2, 3], buffer);
        Assert.Equal(await inner.Memory.GetBlockStatusAsync(0, 1 << 20, CancellationToken.None), await export.GetBlockStatusAsync(0, 1 << 20, CancellationToken.None));
        Assert.True(export.AllocationDepth);
        Assert.Equal(["backup-1"], export.DirtyBitmaps);
        Assert.Equal([new NbdMetaExtent(8192, 1)], await export.GetAllocationDepthAsync(0, 8192, CancellationToken.None));
        Assert.Equal([new NbdMetaExtent(8192, NbdMetaExtent.Dirty)], await export.GetDirtyBitmapAsync("backup-1", 0, 8192, CancellationToken.None));
        Assert.Equal((inner.Name, inner.Size, false), (export.Name, export.Size, export.IsReadOnly));
        await export.DisposeAsync();

        Assert.Equal(["read 4096+3", "block status 0+1048576", "allocation depth 0+8192", "bitmap backup-1 0+8192"], inner.Events);
        Assert.Empty(CrashLogReader.Read(log).Records);
    }

    [Fact]
    public async Task A_log_that_cannot_be_written_fails_the_request_with_EIO_naming_it_before_the_image_sees_it()
    {
        var (export, inner, log) = Start();
        var path = _dir.File("closed.crashlog");
        var writer = CrashLogWriter.Create(path, Header);
        await writer.DisposeAsync();
        var broken = new RecordingExport(inner, writer);

        var error = await Assert.ThrowsAsync<NbdException>(() => broken.WriteAsync(0, new byte[512], fua: false, CancellationToken.None).AsTask());
        Assert.Equal(NbdError.IoError, error.Error);
        Assert.StartsWith($"recording to '{path}' failed: ", error.Message);
        await Assert.ThrowsAsync<NbdException>(() => broken.FlushAsync(CancellationToken.None).AsTask());
        Assert.Empty(inner.Events);
        await export.DisposeAsync();
        Assert.Empty(Operations(log));
    }

    [Fact]
    public async Task A_read_only_export_is_refused_in_one_line()
    {
        var path = _dir.File("ro.crashlog");
        await using var writer = CrashLogWriter.Create(path, Header);
        var error = Assert.Throws<ArgumentException>(() => new RecordingExport(new ScriptedExport { IsReadOnly = true }, writer));
        Assert.Equal("cannot record export 'scripted': it is read-only, a recording needs a writable export", error.Message);
    }

    [Fact]
    public async Task Concurrent_writers_each_get_their_own_completed_record()
    {
        var (export, _, log) = Start();
        await Task.WhenAll(Enumerable.Range(0, 64).Select(i => Task.Run(async () =>
            await export.WriteAsync(i * 4096L, Enumerable.Repeat((byte)i, 4096).ToArray(), fua: i % 8 == 0, CancellationToken.None))));
        await export.FlushAsync(CancellationToken.None);
        await export.DisposeAsync();

        var operations = CrashLogReader.Read(log).Operations;
        Assert.Equal(65, operations.Count);
        Assert.All(operations, o => Assert.True(o.Ok));
        Assert.All(operations, o => Assert.True(o.CompleteIndex > o.BeginIndex));
        Assert.Equal(Enumerable.Range(0, 64).Select(i => i * 4096L).Order(), operations.Where(o => o.Kind == CrashLogRecordKind.Write).Select(o => o.Offset).Order());
        Assert.All(operations.Where(o => o.Kind == CrashLogRecordKind.Write), o => Assert.All(o.Data.ToArray(), b => Assert.Equal((byte)(o.Offset / 4096), b)));
    }
}
