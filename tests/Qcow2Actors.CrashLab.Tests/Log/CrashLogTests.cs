using System.Buffers.Binary;
using System.IO.Hashing;
using Qcow2Actors.CrashLab;

namespace Qcow2Actors.CrashLab.Tests.Log;

public sealed class CrashLogTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("q2a-crashlog-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly CrashLogHeader Header =
        new("/images/disk.qcow2", "q2a-record-20261130T190000Z", 64L << 20, DateTimeOffset.FromUnixTimeMilliseconds(1_796_000_000_000));

    private async Task<string> WriteSampleAsync()
    {
        var path = Path.Combine(_dir, "sample.log");
        await using var writer = CrashLogWriter.Create(path, Header);
        var w = writer.BeginWrite(4096, Enumerable.Range(0, 1024).Select(i => (byte)i).ToArray(), fua: false);
        var z = writer.BeginWriteZeroes(1 << 20, 65536, mayUnmap: true, fua: false);
        writer.Complete(w, ok: true);
        var f = writer.BeginFlush();
        writer.Complete(z, ok: false);
        writer.Complete(f, ok: true);
        await writer.FlushAsync();
        var t = writer.BeginTrim(8192, 512, fua: true);
        writer.Complete(t, ok: true);
        writer.BeginWrite(0, new byte[] { 7, 7, 7 }, fua: true);
        return path;
    }

    [Fact]
    public async Task A_log_reads_back_with_its_header_records_and_completions()
    {
        var log = CrashLogReader.Read(await WriteSampleAsync());

        Assert.Equal(Header, log.Header);
        Assert.False(log.IsTruncated);
        Assert.Equal(9, log.Records.Count);
        Assert.Equal([1L, 2, 3, 4, 5], log.Operations.Select(o => o.Id));
        var write = log.Operations[0];
        Assert.Equal((CrashLogRecordKind.Write, 4096L, 1024L, false, true), (write.Kind, write.Offset, write.Length, write.Fua, write.Ok!.Value));
        Assert.Equal(Enumerable.Range(0, 1024).Select(i => (byte)i), write.Data.ToArray());
        var zero = log.Operations[1];
        Assert.Equal((CrashLogRecordKind.WriteZeroes, 1L << 20, 65536L, true, false), (zero.Kind, zero.Offset, zero.Length, zero.MayUnmap, zero.Ok!.Value));
        Assert.Equal((CrashLogRecordKind.Flush, 5), (log.Operations[2].Kind, log.Operations[2].CompleteIndex!.Value));
        Assert.Equal((CrashLogRecordKind.Trim, true), (log.Operations[3].Kind, log.Operations[3].Fua));
        Assert.Null(log.Operations[4].Ok);
        Assert.Null(log.Operations[4].CompleteIndex);
    }

    [Fact]
    public async Task A_log_larger_than_an_array_can_hold_reads_back_whole()
    {
        // 34 writes of the largest record (64 MiB) make a 2.1 GiB log: more than one array holds. Their data are
        // holes (zeros) in a sparse file, so the test writes only headers and checksums.
        const int writes = 34;
        const int dataLength = CrashLogRecordLayout.MaxDataLength;
        var header = Header with { VirtualSize = (long)writes * dataLength };
        var path = Path.Combine(_dir, "large.log");
        await CrashLogWriter.Create(path, header).DisposeAsync();
        var zeros = new byte[1 << 20];
        await using (var file = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            long at = file.Length;
            for (int i = 0; i < writes; i++)
            {
                var fixedPart = new byte[CrashLogRecordLayout.FixedLength];
                BinaryPrimitives.WriteUInt32LittleEndian(fixedPart.AsSpan(CrashLogRecordLayout.RecordLengthOffset),
                    CrashLogRecordLayout.FixedLength + dataLength + CrashLogRecordLayout.ChecksumLength);
                fixedPart[CrashLogRecordLayout.KindOffset] = (byte)CrashLogRecordKind.Write;
                BinaryPrimitives.WriteInt64LittleEndian(fixedPart.AsSpan(CrashLogRecordLayout.IdOffset), i + 1);
                BinaryPrimitives.WriteInt64LittleEndian(fixedPart.AsSpan(CrashLogRecordLayout.OffsetOffset), (long)i * dataLength);
                BinaryPrimitives.WriteInt64LittleEndian(fixedPart.AsSpan(CrashLogRecordLayout.LengthOffset), dataLength);
                var hash = new XxHash64();
                hash.Append(fixedPart);
                for (int n = 0; n < dataLength; n += zeros.Length) hash.Append(zeros);
                file.Position = at;
                await file.WriteAsync(fixedPart);
                file.Position = at + CrashLogRecordLayout.FixedLength + dataLength; // the data: a hole
                var checksum = new byte[CrashLogRecordLayout.ChecksumLength];
                BinaryPrimitives.WriteUInt64LittleEndian(checksum, hash.GetCurrentHashAsUInt64());
                await file.WriteAsync(checksum);
                at = file.Position;
            }
        }

        var log = CrashLogReader.Read(path);

        Assert.False(log.IsTruncated, log.Truncation);
        Assert.Equal(new FileInfo(path).Length, log.ValidLength);
        Assert.True(log.ValidLength > int.MaxValue);
        Assert.Equal(writes, log.Operations.Count);
        var last = log.Operations[^1];
        Assert.Equal(((long)(writes - 1) * dataLength, dataLength), (last.Offset, last.Data.Length));
        Assert.True(log.Records[^1].FileOffset > int.MaxValue);
        Assert.Equal(-1, last.Data.Span.IndexOfAnyExcept((byte)0));
        // The span above is the mapping's: the log (and its mapping) stays reachable until it is read.
        GC.KeepAlive(log);
    }

    [Fact]
    public async Task A_log_a_recorder_is_still_appending_to_reads_back_its_whole_records_so_far()
    {
        var path = Path.Combine(_dir, "live.log");
        await using var writer = CrashLogWriter.Create(path, Header);
        // A recorder appending as fast as it can (a bounded run): each read maps the file while it grows.
        var recorder = Task.Run(() =>
        {
            var data = new byte[4096];
            for (int round = 0; round < 5000; round++)
                writer.Complete(writer.BeginWrite(round % 1000 * 4096L, data, fua: false), ok: true);
        });
        int reads = 0, seen = 0;
        while (!recorder.IsCompleted || reads == 0)
        {
            var log = CrashLogReader.Read(path);
            var now = log.Operations.Count;
            Assert.True(now >= seen, $"read {reads}: {now} operations after {seen}");
            seen = now;
            reads++;
        }
        await recorder;
        Assert.Equal(5000, CrashLogReader.Read(path).Operations.Count(o => o.Ok == true));
    }

    [Fact]
    public async Task A_torn_tail_stops_the_reader_at_the_last_whole_record()
    {
        var path = await WriteSampleAsync();
        var whole = CrashLogReader.Read(path);
        var bytes = await File.ReadAllBytesAsync(path);
        // Cut the last record (a 3-byte write) in the middle, as a crash during its append would.
        var lastStart = whole.Records[^1].FileOffset;
        await File.WriteAllBytesAsync(path, bytes[..(int)(lastStart + 20)]);

        var torn = CrashLogReader.Read(path);

        Assert.True(torn.IsTruncated);
        Assert.Equal(8, torn.Records.Count);
        Assert.Equal(lastStart, torn.ValidLength);
        Assert.Contains($"offset {lastStart}", torn.Truncation);
        Assert.Equal(4, torn.Operations.Count);
    }

    [Fact]
    public async Task A_flipped_byte_in_a_record_is_detected_and_reading_stops_there()
    {
        var path = await WriteSampleAsync();
        var whole = CrashLogReader.Read(path);
        var bytes = await File.ReadAllBytesAsync(path);
        var second = whole.Records[1];
        bytes[second.FileOffset + 17] ^= 0x40; // inside the offset field of the WRITE_ZEROES record
        await File.WriteAllBytesAsync(path, bytes);

        var read = CrashLogReader.Read(path);

        Assert.True(read.IsTruncated);
        Assert.Single(read.Records);
        Assert.Contains("checksum", read.Truncation);
        Assert.Contains($"offset {second.FileOffset}", read.Truncation);
    }

    [Fact]
    public async Task A_flipped_byte_in_a_write_s_data_is_detected()
    {
        var path = await WriteSampleAsync();
        var bytes = await File.ReadAllBytesAsync(path);
        var first = CrashLogReader.Read(path).Records[0];
        bytes[first.FileOffset + 32 + 500] ^= 1;
        await File.WriteAllBytesAsync(path, bytes);

        var read = CrashLogReader.Read(path);

        Assert.True(read.IsTruncated);
        Assert.Empty(read.Records);
    }

    [Fact]
    public async Task A_corrupt_header_is_refused_in_one_line_naming_the_file()
    {
        var path = await WriteSampleAsync();
        var bytes = await File.ReadAllBytesAsync(path);
        bytes[45] ^= 1; // inside the image path
        await File.WriteAllBytesAsync(path, bytes);

        var error = Assert.Throws<InvalidDataException>(() => CrashLogReader.Read(path));

        Assert.Contains(path, error.Message);
        Assert.Contains("header checksum", error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public async Task A_file_that_is_not_a_crash_log_is_refused_naming_the_magic()
    {
        var path = Path.Combine(_dir, "other.bin");
        await File.WriteAllBytesAsync(path, new byte[200]);

        var error = Assert.Throws<InvalidDataException>(() => CrashLogReader.Read(path));

        Assert.Contains("magic", error.Message);
    }

    [Fact]
    public async Task Creating_a_log_over_an_existing_file_is_refused_naming_the_path()
    {
        var path = await WriteSampleAsync();

        var error = Assert.Throws<IOException>(() => CrashLogWriter.Create(path, Header));

        Assert.Contains(path, error.Message);
    }

    [Fact]
    public async Task Concurrent_appends_get_distinct_ids_and_all_read_back()
    {
        var path = Path.Combine(_dir, "concurrent.log");
        await using (var writer = CrashLogWriter.Create(path, Header))
        {
            await Parallel.ForAsync(0, 200, async (i, _) =>
            {
                var id = writer.BeginWrite(i * 512L, new byte[512], fua: false);
                writer.Complete(id, ok: true);
                await Task.Yield();
            });
        }

        var log = CrashLogReader.Read(path);

        Assert.False(log.IsTruncated);
        Assert.Equal(Enumerable.Range(1, 200).Select(i => (long)i), log.Operations.Select(o => o.Id));
        Assert.All(log.Operations, o => Assert.True(o.Ok));
    }

    [Fact]
    public async Task Completing_an_id_never_begun_is_refused()
    {
        await using var writer = CrashLogWriter.Create(Path.Combine(_dir, "bad.log"), Header);

        Assert.Throws<ArgumentOutOfRangeException>(() => writer.Complete(1, ok: true));
    }
}
