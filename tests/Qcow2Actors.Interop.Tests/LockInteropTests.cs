using System.Security.Cryptography;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// One writer per image, across q2a and QEMU: both speak QEMU's OFD lock protocol, so whoever
/// comes second is refused in one line naming the lock, and a write flushed through the first
/// holder before the attempt is still there after it closes. Read-only verbs share the image
/// with its writer only when asked to (<c>-U</c>), as qemu-img does.
/// </summary>
public sealed class LockInteropTests : IDisposable
{
    private const string WriteLock = "Failed to get \"write\" lock";
    private const string SharedWriteLock = "Failed to get shared \"write\" lock";
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string NewImage(string name = "disk.qcow2")
    {
        var img = _dir.File(name);
        QemuTools.QemuImg("create", "-f", "qcow2", img, "64M").EnsureSuccess();
        return img;
    }

    private Task<ServeProcess> ServeAsync(string img, string socket = "q2a.sock") =>
        ServeProcess.StartAsync(1, "--socket", _dir.File(socket), img);

    /// <summary>Writes 64 KiB of 0x5a at 0 through an NBD export and flushes it.</summary>
    private static void WriteFlushed(string uri) =>
        QemuTools.QemuIo("-f", "raw", uri, "-c", "write -P 0x5a 0 64k", "-c", "flush").EnsureSuccess();

    /// <summary>After the holder closed: the image checks clean and still holds the flushed write.</summary>
    private static void AssertFlushedWriteKept(string img)
    {
        QemuTools.AssertCheckClean(img);
        var r = QemuTools.QemuIo("-r", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", img);
        Assert.True(r.ExitCode == 0 && !(r.StdOut + r.StdErr).Contains("Pattern verification failed", StringComparison.Ordinal),
            $"the flushed write is gone: {r.StdOut}{r.StdErr}");
    }

    /// <summary>Refused: non-zero exit, and stderr is one line that names the lock.</summary>
    private static void AssertRefused(QemuTools.Result r, string lockName, string what)
    {
        Assert.True(r.ExitCode != 0, $"{what} was not refused: {r.StdOut}{r.StdErr}");
        var lines = r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"{what}: expected one line on stderr, got: {r.StdErr}");
        Assert.Contains(lockName, lines[0]);
        Assert.Contains("is another process using the image?", lines[0]);
    }

    private static byte[] Hash(string path) => SHA256.HashData(File.ReadAllBytes(path));

    [ServeFact]
    public async Task A_second_q2a_serve_on_one_image_is_refused_and_the_first_keeps_its_writes()
    {
        var img = NewImage();
        using (var first = await ServeAsync(img))
        {
            WriteFlushed(first.Uri);
            var e = await Assert.ThrowsAsync<InvalidOperationException>(() => ServeAsync(img, "second.sock"));
            Assert.Contains($"q2a: Could not open '{img}': {WriteLock}: is another process using the image?", e.Message);
            Assert.Equal(0, first.Stop());
        }
        AssertFlushedWriteKept(img);
    }

    [ServeFact]
    public void Every_q2a_writer_is_refused_while_qemu_nbd_holds_the_image()
    {
        var img = NewImage();
        using (var nbd = QemuNbdProcess.Start(img, _dir))
        {
            WriteFlushed(nbd.Uri);
            AssertRefused(QemuTools.Q2a("io", "-c", "write -P 0x66 0 4k", img), WriteLock, "q2a io");
            AssertRefused(QemuTools.Q2a("snapshot", "-c", "snap", img), WriteLock, "q2a snapshot -c");
            AssertRefused(QemuTools.Q2a("recover", img), WriteLock, "q2a recover");
            AssertRefused(QemuTools.Q2a("info", img), SharedWriteLock, "q2a info");
            // serve is refused before it prints a URI; run it as a command so a wrong answer cannot hang here.
            var serve = QemuTools.Q2a("serve", "--socket", _dir.File("q2a.sock"), img);
            AssertRefused(serve, WriteLock, "q2a serve");
            Assert.DoesNotContain("Serving", serve.StdOut);
            nbd.Stop();
        }
        AssertFlushedWriteKept(img);
        Assert.Equal("", QemuTools.QemuImg("snapshot", "-l", img).EnsureSuccess().StdOut.Trim());
    }

    [ServeFact]
    public async Task Qemu_io_cannot_write_an_image_q2a_serve_holds()
    {
        var img = NewImage();
        using (var server = await ServeAsync(img))
        {
            WriteFlushed(server.Uri);
            var r = QemuTools.QemuIo("-f", "qcow2", "-c", "write -P 0x66 0 4k", img);
            Assert.True(r.ExitCode != 0, $"qemu-io wrote to a served image: {r.StdOut}{r.StdErr}");
            Assert.Contains($"can't open device {img}: {WriteLock}", r.StdErr);
            Assert.Equal(0, server.Stop());
        }
        AssertFlushedWriteKept(img);
    }

    [ServeFact]
    public async Task Qemu_img_snapshot_is_refused_on_an_image_q2a_serve_holds()
    {
        var img = NewImage();
        using (var server = await ServeAsync(img))
        {
            WriteFlushed(server.Uri);
            var r = QemuTools.QemuImg("snapshot", "-c", "snap", img);
            Assert.True(r.ExitCode != 0, $"qemu-img snapshot ran on a served image: {r.StdOut}{r.StdErr}");
            Assert.Contains(WriteLock, r.StdErr);
            Assert.Equal(0, server.Stop());
        }
        AssertFlushedWriteKept(img);
        Assert.Equal("", QemuTools.QemuImg("snapshot", "-l", img).EnsureSuccess().StdOut.Trim());
    }

    [ServeFact]
    public async Task Q2a_recover_is_refused_while_q2a_serve_holds_the_image_and_leaves_its_journal_alone()
    {
        var img = NewImage();
        var journal = img + ".journal";
        using (var server = await ServeAsync(img))
        {
            WriteFlushed(server.Uri);
            // The flushed write lives in the journal until the server checkpoints.
            Assert.True(File.Exists(journal), "the served image has no journal after a flushed write");
            var before = Hash(journal);
            AssertRefused(QemuTools.Q2a("recover", img), WriteLock, "q2a recover");
            Assert.True(File.Exists(journal), "recover removed the server's journal");
            Assert.Equal(before, Hash(journal));
            Assert.Equal(0, server.Stop());
        }
        Assert.False(File.Exists(journal), "a clean close leaves no journal");
        AssertFlushedWriteKept(img);
    }

    [ServeFact]
    public void Q2a_create_over_an_image_in_use_is_refused_and_leaves_it_unchanged()
    {
        var img = NewImage();
        using (var nbd = QemuNbdProcess.Start(img, _dir))
        {
            WriteFlushed(nbd.Uri);
            var before = Hash(img);
            var r = QemuTools.Q2a("create", "-f", "qcow2", img, "1M");
            AssertRefused(r, WriteLock, "q2a create");
            Assert.Equal(before, Hash(img));
            var other = _dir.File("other.raw");
            QemuTools.QemuImg("create", "-f", "raw", other, "1M").EnsureSuccess();
            AssertRefused(QemuTools.Q2a("convert", "-O", "raw", other, img), WriteLock, "q2a convert onto it");
            Assert.Equal(before, Hash(img));
            nbd.Stop();
        }
        AssertFlushedWriteKept(img);
        Assert.Contains("virtual size: 64 MiB", QemuTools.QemuImg("info", img).EnsureSuccess().StdOut);
    }

    [ServeFact]
    public async Task Force_share_reads_an_image_q2a_serve_holds_and_without_it_info_is_refused()
    {
        var img = NewImage();
        QemuTools.QemuIo("-f", "qcow2", "-c", "write -P 0x5a 0 64k", img).EnsureSuccess();
        var raw = _dir.File("copy.raw");
        using (var server = await ServeAsync(img))
        {
            var qemuInfo = QemuTools.QemuImg("info", img);
            Assert.True(qemuInfo.ExitCode != 0, "qemu-img info without -U read a served image");
            Assert.Contains(SharedWriteLock, qemuInfo.StdErr);
            AssertRefused(QemuTools.Q2a("info", img), SharedWriteLock, "q2a info");
            AssertRefused(QemuTools.Q2a("check", img), SharedWriteLock, "q2a check");

            QemuTools.QemuImg("info", "-U", img).EnsureSuccess();
            Assert.Contains("virtual size: 64 MiB", QemuTools.Q2a("info", "-U", img).EnsureSuccess().StdOut);
            Assert.Contains("No errors were found on the image.", QemuTools.Q2a("check", "--force-share", img).EnsureSuccess().StdOut);
            Assert.Contains("\"data\": true", QemuTools.Q2a("map", "-U", "--output", "json", img).EnsureSuccess().StdOut);
            QemuTools.Q2a("convert", "-U", "-O", "raw", img, raw).EnsureSuccess();
            Assert.Contains("Images are identical.", QemuTools.Q2a("compare", "-U", img, raw).EnsureSuccess().StdOut);
            QemuTools.Q2a("io", "-r", "-U", "-c", "read -P 0x5a 0 64k", img).EnsureSuccess();
            // -U is for readers only, as in qemu-io.
            Assert.Contains("force-share=on can only be used with read-only images", QemuTools.Q2a("io", "-U", "-c", "write 0 4k", img).StdErr);
            Assert.Equal(0, server.Stop());
        }
        QemuTools.QemuIo("-r", "-f", "raw", "-c", "read -P 0x5a 0 64k", raw).EnsureSuccess();
        AssertFlushedWriteKept(img);
    }

    [ServeFact]
    public async Task Force_share_reads_a_served_image_with_its_journal_pending_as_recovery_would_leave_it()
    {
        var img = NewImage();
        using (var server = await ServeAsync(img))
        {
            // Flushed through the server: journaled, not yet checkpointed, so the image on disk is journal-pending.
            WriteFlushed(server.Uri);
            var info = QemuTools.Q2a("info", "-U", "--output", "json", img).EnsureSuccess().StdOut;
            Assert.Contains("\"journal-pending\": true", info);
            QemuTools.Q2a("io", "-r", "-U", "-c", "read -P 0x5a 0 64k", img).EnsureSuccess();
            Assert.Contains("\"data\": true", QemuTools.Q2a("map", "-U", "--output", "json", img).EnsureSuccess().StdOut);
            Assert.Equal(0, server.Stop());
        }
        AssertFlushedWriteKept(img);
    }

    [ServeFact]
    public async Task The_backing_file_of_a_served_image_is_held_as_a_reader_holds_it()
    {
        var baseImg = NewImage("base.qcow2");
        QemuTools.QemuIo("-f", "qcow2", "-c", "write -P 0x5a 0 64k", baseImg).EnsureSuccess();
        var top = _dir.File("top.qcow2");
        QemuTools.QemuImg("create", "-f", "qcow2", "-b", baseImg, "-F", "qcow2", top).EnsureSuccess();
        using (var server = await ServeAsync(top))
        {
            var r = QemuTools.QemuIo("-f", "qcow2", "-c", "write -P 0x66 0 4k", baseImg);
            Assert.True(r.ExitCode != 0, $"qemu-io wrote under a served image's backing file: {r.StdOut}{r.StdErr}");
            Assert.Contains(WriteLock, r.StdErr);
            // Readers share it.
            QemuTools.QemuImg("info", baseImg).EnsureSuccess();
            Assert.Equal(0, server.Stop());
        }
        AssertFlushedWriteKept(top);
    }
}
