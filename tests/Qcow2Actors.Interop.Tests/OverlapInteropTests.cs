using System.Text.Json;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests;

/// <summary>
/// <c>q2a io</c> against an image whose L2 entry was damaged to point at its own L1 table,
/// beside qemu-io on the same damage: both refuse the write with EIO, say on stderr which
/// structure the write would have destroyed, and leave the image marked corrupt.
/// </summary>
public sealed class OverlapInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string ImageWithEntryOnL1()
    {
        string img = _dir.File($"img{Guid.NewGuid():N}.qcow2");
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", img, "64M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 0x11 0 128k", img).EnsureSuccess();
        long l1 = (long)ImageFileBytes.ReadU64(img, Qcow2Header.L1TableOffsetOffset);
        long l2 = (long)(ImageFileBytes.ReadU64(img, l1) & L1Entry.OffsetMask);
        ImageFileBytes.WriteU64(img, l2, L2Entry.Standard(l1, copied: true).Word0);
        return img;
    }

    [QemuFact]
    public void Q2a_io_refuses_a_write_onto_the_L1_table_in_one_line_and_marks_the_image_corrupt_as_qemu_io_does()
    {
        string ours = ImageWithEntryOnL1();
        string theirs = ImageWithEntryOnL1();
        long l1 = (long)ImageFileBytes.ReadU64(ours, Qcow2Header.L1TableOffsetOffset);
        var l1Before = ImageFileBytes.ReadAt(ours, l1, 512);

        var r = QemuTools.Q2a("io", "-c", "write -P 0xab 0 64k", ours);
        var q = QemuTools.QemuIo("-c", "write -P 0xab 0 64k", theirs);

        Assert.NotEqual(0, r.ExitCode);
        Assert.NotEqual(0, q.ExitCode);
        Assert.Equal("write failed: Input/output error", r.StdOut.Trim());
        Assert.Equal(q.StdOut.Trim(), r.StdOut.Trim());
        var line = Assert.Single(r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("active L1 table", line);
        Assert.Contains(ours, line);
        Assert.Contains($"0x{l1:X}", line);
        Assert.Contains("overlaps with active L1 table", q.StdErr); // the oracle names the same structure
        Assert.Equal(l1Before, ImageFileBytes.ReadAt(ours, l1, 512));
        foreach (var img in new[] { ours, theirs })
        {
            var info = JsonDocument.Parse(QemuTools.QemuImg("info", "--output=json", img).EnsureSuccess().StdOut).RootElement;
            Assert.True(info.GetProperty("format-specific").GetProperty("data").GetProperty("corrupt").GetBoolean(), img);
        }
    }
}
