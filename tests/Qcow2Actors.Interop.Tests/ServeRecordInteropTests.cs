using Qcow2Actors.CrashLab.Tests.Recording;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a serve --record LOG</c> out of process with qemu-io as the guest: the log holds its writes, flush and FUA
/// write in order, the image holds the base snapshot, and the image stays check-clean; what cannot be recorded is
/// refused in one line before anything changes.
/// </summary>
public sealed class ServeRecordInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [ServeFact]
    public async Task A_recorded_session_logs_writes_flush_and_fua_in_order_from_a_base_snapshot()
    {
        var img = _dir.File("lab.qcow2");
        var log = _dir.File("lab.crashlog");
        ImageCreator.Create(img, new Qcow2CreateOptions { Size = 16 << 20 });
        QemuTools.QemuIo("-f", "qcow2", "-c", "write -P 0x11 0 128k", img).EnsureSuccess();
        using (var server = await ServeProcess.StartAsync(1, "--port", "0", "--record", log, img))
        {
            Assert.Matches(@"Recording 'lab\.qcow2' into .*lab\.crashlog from snapshot q2a-record-\d{8}T\d{6}Z", server.StdOut);
            // -t writeback: qemu-io's default (writethrough) would send every write with FUA.
            QemuTools.QemuIo("-t", "writeback", "-f", "raw", server.Uri,
                "-c", "write -P 0x5a 0 64k",
                "-c", "write -z 1M 256k",
                "-c", "discard 2M 1M",
                "-c", "flush",
                "-c", "write -f -P 0x6b 4M 4k",
                "-c", "read -P 0x5a 0 64k").EnsureSuccess();
            Assert.Equal(0, server.Stop());
        }

        var read = CrashLogTestReader.Read(log);
        Assert.False(read.Truncated);
        Assert.Equal(img, read.ImagePath);
        Assert.Equal(16 << 20, read.VirtualSize);
        Assert.Equal(["write 0+65536 ok", "zero 1048576+262144 ok", "trim 2097152+1048576 ok", "flush ok", "write 4194304+4096 fua ok", "flush ok"], read.Operations);
        Assert.Equal(Enumerable.Repeat((byte)0x5a, 65536), read.FirstWriteData);

        // The base is the disk as it was before the guest came: the pre-recording pattern, none of the session's.
        var snapshots = QemuTools.QemuImg("snapshot", "-l", img).EnsureSuccess().StdOut;
        Assert.Contains(read.BaseSnapshot, snapshots);
        var baseImage = _dir.File("base.raw");
        QemuTools.QemuImg("convert", "-l", read.BaseSnapshot, "-O", "raw", img, baseImage).EnsureSuccess();
        QemuTools.QemuIo("-f", "raw", "-r", "-c", "read -P 0x11 0 128k", "-c", "read -P 0 4M 4k", baseImage).EnsureSuccess();
        QemuTools.AssertCheckClean(img);
    }

    [ServeFact]
    public void What_cannot_be_recorded_is_refused_in_one_line_and_leaves_the_image_alone()
    {
        var img = _dir.File("disk.qcow2");
        ImageCreator.Create(img, new Qcow2CreateOptions { Size = 1 << 20 });
        var existing = _dir.File("old.crashlog");
        File.WriteAllText(existing, "a previous recording");

        var exists = QemuTools.Q2a("serve", "--port", "0", "--record", existing, img);
        Assert.Equal(1, exists.ExitCode);
        Assert.Equal($"q2a: recording log '{existing}' exists: a recording is never overwritten, choose a new path", exists.StdErr.Trim());
        Assert.Equal("a previous recording", File.ReadAllText(existing));

        var readOnly = QemuTools.Q2a("serve", "--port", "0", "--read-only", "--record", _dir.File("ro.crashlog"), img);
        Assert.Equal(1, readOnly.ExitCode);
        Assert.Single(readOnly.StdErr.Trim().Split('\n'));
        Assert.Contains("read-only", readOnly.StdErr);

        var raw = _dir.File("disk.raw");
        File.WriteAllBytes(raw, new byte[1 << 20]);
        var rawRefused = QemuTools.Q2a("serve", "--port", "0", "--record", _dir.File("raw.crashlog"), raw);
        Assert.Equal(1, rawRefused.ExitCode);
        Assert.Equal($"q2a: --record cannot record '{raw}': a raw image has no internal snapshot to start from (convert it to qcow2)", rawRefused.StdErr.Trim());

        Assert.False(File.Exists(_dir.File("ro.crashlog")));
        Assert.False(File.Exists(_dir.File("raw.crashlog")));
        Assert.DoesNotContain("q2a-record-", QemuTools.QemuImg("snapshot", "-l", img).EnsureSuccess().StdOut);
    }
}
