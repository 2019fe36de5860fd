using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Nbd.Metrics;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// The incremental backup flow of the README, step by step with standard tools only (qemu-img, qemu-io,
/// nbdcopy, nbdinfo) against <c>q2a serve -B</c>: a full copy, guest writes through NBD, the changed
/// extents from <c>qemu:dirty-bitmap:NAME</c>, only those copied, and the rebuilt copy identical to the
/// source. The serve code runs in this process so the NBD bytes it sends can be counted exactly.
/// </summary>
public sealed class IncrementalBackupInteropTests : IDisposable
{
    private const long M = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Collects stdout and completes <see cref="Serving"/> with the first URI line.</summary>
    private sealed class UriWriter : StringWriter
    {
        private readonly StringBuilder _line = new();
        public TaskCompletionSource<string> Serving { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override void Write(char value)
        {
            if (value != '\n') { _line.Append(value); return; }
            var line = _line.ToString();
            _line.Clear();
            if (line.StartsWith("Serving ", StringComparison.Ordinal)) Serving.TrySetResult(line["Serving ".Length..]);
        }

        public override Task WriteLineAsync(string? value)
        {
            Write((value ?? "") + "\n");
            return Task.CompletedTask;
        }

        public override void Write(string? value)
        {
            foreach (var c in value ?? "") Write(c);
        }
    }

    private static List<(long Offset, long Length)> DirtyFromNbdinfo(string uri, string bitmap) =>
        QemuTools.Run("nbdinfo", "--map=qemu:dirty-bitmap:" + bitmap, uri).EnsureSuccess().StdOut
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f[2] == "1")
            .Select(f => (long.Parse(f[0], CultureInfo.InvariantCulture), long.Parse(f[1], CultureInfo.InvariantCulture)))
            .ToList();

    /// <summary>qemu-img map through the x-dirty-bitmap hack: dirty extents read as "data": false.</summary>
    private static List<(long Offset, long Length)> DirtyFromQemuImgMap(string socket, string export, string bitmap)
    {
        var json = QemuTools.QemuImg("map", "--output=json", "--image-opts",
            $"driver=nbd,server.type=unix,server.path={socket},export={export},x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}").EnsureSuccess().StdOut;
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.EnumerateArray()
            .Where(e => !e.GetProperty("data").GetBoolean())
            .Select(e => (e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64()))
            .ToList();
    }

    [ServeFact]
    public async Task Full_copy_then_only_the_dirty_ranges_rebuild_a_copy_identical_to_the_source()
    {
        const string export = "backup-flow-disk", bitmap = "backup-1";
        string disk = _dir.File("disk.qcow2"), full = _dir.File("full.raw"), socket = _dir.File("nbd.sock");
        string uri = $"nbd+unix:///{export}?socket={socket}";
        Qemu("create", "-q", "-f", "qcow2", disk, "64M");
        Io(disk, ["write -P 1 0 8M", "write -P 2 30M 2M"]);
        // 1. Start tracking: a persistent bitmap (64 KiB granules: the cluster size).
        Qemu("bitmap", "--add", disk, bitmap);

        // 2. Serve it read-write with the bitmap exported.
        var settings = ServeSettings.From([disk], null, null, socket, export, false, null, null, null, bitmaps: [bitmap]);
        var stdout = new UriWriter();
        var stop = new TaskCompletionSource();
        var run = ServeCommand.RunAsync(settings, stdout, new StringWriter(), stop.Task);
        Assert.Equal(uri, await stdout.Serving.Task.WaitAsync(TimeSpan.FromSeconds(60)));
        try
        {
            // 3. Full backup.
            QemuTools.Run("nbdcopy", uri, full).EnsureSuccess();
            Assert.Empty(DirtyFromNbdinfo(uri, bitmap)); // reading sets nothing

            // 4. The guest writes (through NBD): unaligned, inside one granule, across two, and the last granule.
            QemuTools.QemuIo("-f", "raw", "-c", "write -P 0x5a 5M 100k", "-c", "write -P 0x6b 20M 1M", "-c", "write -P 7 40M 4k",
                "-c", "write -P 8 67107840 512", uri).EnsureSuccess();

            // 5. What changed, as two standard tools see it.
            var dirty = DirtyFromNbdinfo(uri, bitmap);
            Assert.Equal([(5 * M, 128 * 1024L), (20 * M, M), (40 * M, 64 * 1024L), (64 * M - 64 * 1024, 64 * 1024L)], dirty);
            Assert.Equal(dirty, DirtyFromQemuImgMap(socket, export, bitmap));

            // 6. Copy only those ranges into the full copy, counting what the server sends.
            long read = 0;
            using var listener = new MeterListener();
            listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == NbdMetrics.MeterName && instrument.Name == NbdMetrics.Io) l.EnableMeasurementEvents(instrument);
            };
            listener.SetMeasurementEventCallback<long>((_, bytes, tags, _) =>
            {
                bool ours = false, isRead = false;
                foreach (var tag in tags)
                {
                    ours |= tag.Key == NbdMetrics.ExportTag && (string?)tag.Value == export;
                    isRead |= tag.Key == NbdMetrics.DirectionTag && (string?)tag.Value == "read";
                }
                if (ours && isRead) Interlocked.Add(ref read, bytes);
            });
            listener.Start();
            foreach (var (offset, length) in dirty)
            {
                QemuTools.QemuImg("convert", "-n",
                    "--image-opts", $"driver=raw,offset={offset},size={length},file.driver=nbd,file.server.type=unix,file.server.path={socket},file.export={export}",
                    "--target-image-opts", $"driver=raw,offset={offset},size={length},file.driver=file,file.filename={full}").EnsureSuccess();
            }
            listener.Dispose();
            // Exactly the dirty ranges were read: 128 KiB + 1 MiB + 64 KiB + 64 KiB = 1310720 bytes of 64 MiB.
            Assert.Equal(dirty.Sum(d => d.Length), Interlocked.Read(ref read));
            Assert.Equal(1310720L, read);

            // 7. The rebuilt copy is the source.
            var compare = QemuTools.QemuImg("compare", "-f", "raw", "-F", "raw", full, uri);
            Assert.True(compare.ExitCode == 0, compare.StdOut + compare.StdErr);
        }
        finally
        {
            stop.TrySetResult();
        }
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromSeconds(60)));
        QemuTools.AssertCheckClean(disk);
        var closed = QemuTools.QemuImg("compare", "-f", "raw", "-F", "qcow2", full, disk);
        Assert.True(closed.ExitCode == 0, closed.StdOut + closed.StdErr);
    }
}
