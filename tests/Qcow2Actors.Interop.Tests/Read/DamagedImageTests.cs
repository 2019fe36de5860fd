using Qcow2Actors.Engine;
using Qcow2Actors.Tests.Shared;
using static Qcow2Actors.Tests.Shared.ImageFileBytes;
using static Qcow2Actors.Interop.Tests.Read.ReadOracle;

namespace Qcow2Actors.Interop.Tests.Read;

/// <summary>
/// qemu-made images with one field broken on purpose: opening or reading must fail with one
/// clear line naming what is wrong and where, never crash, hang or allocate by a bogus size.
/// </summary>
public sealed class DamagedImageTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string MakeImage(string name = "d.qcow2")
    {
        string img = _dir.File(name);
        Qemu("create", "-q", "-f", "qcow2", img, "8M");
        Io(img, ["write -P 1 0 128k", "write -P 2 4M 64k"]);
        return img;
    }

    private static long L2TableOffset(string img) => (long)(ReadU64(img, (long)ReadU64(img, 40)) & 0x00FF_FFFF_FFFF_FE00);

    private static async Task<Exception> ReadFailsAsync(string img, long offset)
    {
        await using var image = await Qcow2Image.OpenAsync(img);
        return await Assert.ThrowsAsync<Qcow2ImageCorruptException>(() => image.ReadAsync(offset, new byte[4096]).AsTask());
    }

    [QemuFact]
    public async Task L2_entry_with_reserved_bits_fails_the_read_naming_the_guest_offset()
    {
        string img = MakeImage();
        long l2 = L2TableOffset(img);
        WriteU64(img, l2 + 8, ReadU64(img, l2 + 8) | 0x0100_0000_0000_0000);
        var ex = await ReadFailsAsync(img, 65536);
        Assert.Contains("guest offset 65536", ex.Message);
        Assert.Contains("reserved bits", ex.Message);
        // Other clusters of the same table still read.
        await using var image = await Qcow2Image.OpenAsync(img);
        var buf = new byte[512];
        await image.ReadAsync(0, buf);
        Assert.Equal(1, buf[0]);
    }

    [QemuFact]
    public async Task L2_table_past_the_end_of_the_file_fails_the_read()
    {
        string img = MakeImage();
        long l1 = (long)ReadU64(img, 40);
        WriteU64(img, l1, 0x8000_0000_4000_0000); // 1 GiB, far past EOF
        var ex = await ReadFailsAsync(img, 0);
        Assert.Contains("past the end", ex.Message);
    }

    [QemuFact]
    public async Task Misaligned_data_cluster_fails_the_read()
    {
        string img = MakeImage();
        long l2 = L2TableOffset(img);
        WriteU64(img, l2, ReadU64(img, l2) + 512);
        var ex = await ReadFailsAsync(img, 0);
        Assert.Contains("not cluster aligned", ex.Message);
    }

    [QemuFact]
    public async Task Compressed_data_past_the_end_of_the_file_fails_the_read()
    {
        string raw = _dir.File("c.raw"), img = _dir.File("c.qcow2");
        await File.WriteAllBytesAsync(raw, Enumerable.Range(0, 1 << 20).Select(i => (byte)(i / 1000)).ToArray());
        Qemu("convert", "-q", "-f", "raw", "-c", "-O", "qcow2", raw, img);
        long l2 = L2TableOffset(img);
        ulong entry = ReadU64(img, l2);
        // Keep the compressed bit and the sector count, move the offset to 2^40.
        ulong offsetMask = (1UL << 54) - 1;
        WriteU64(img, l2, (entry & ~offsetMask) | (1UL << 40));
        var ex = await ReadFailsAsync(img, 0);
        Assert.Contains("compressed", ex.Message);
    }

    [QemuFact]
    public async Task Undecodable_compressed_cluster_fails_the_read()
    {
        string raw = _dir.File("c.raw"), img = _dir.File("c.qcow2");
        await File.WriteAllBytesAsync(raw, Enumerable.Range(0, 1 << 20).Select(i => (byte)(i / 1000)).ToArray());
        Qemu("convert", "-q", "-f", "raw", "-c", "-O", "qcow2", raw, img);
        long l2 = L2TableOffset(img);
        long coffset = (long)(ReadU64(img, l2) & ((1UL << 54) - 1));
        WriteU64(img, coffset, 0xFFFF_FFFF_FFFF_FFFF);
        WriteU64(img, coffset + 8, 0xFFFF_FFFF_FFFF_FFFF);
        var ex = await ReadFailsAsync(img, 0);
        Assert.Contains("does not decompress", ex.Message);
    }

    [QemuFact]
    public async Task Extended_entry_with_a_subcluster_both_allocated_and_zero_fails_the_read()
    {
        string img = _dir.File("x.qcow2");
        Qemu("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", img, "8M");
        Io(img, ["write -P 1 0 4k"]);
        long l2 = L2TableOffset(img);
        WriteU64(img, l2 + 8, ReadU64(img, l2 + 8) | (1UL << 32));
        var ex = await ReadFailsAsync(img, 0);
        Assert.Contains("both allocated and zero", ex.Message);
    }

    [QemuFact]
    public async Task Unknown_incompatible_bit_is_refused_by_its_feature_name()
    {
        string img = MakeImage();
        WriteU64(img, 72, ReadU64(img, 72) | (1UL << 40));
        var ex = await Assert.ThrowsAsync<InvalidDataException>(() => Qcow2Image.OpenAsync(img));
        Assert.Contains("incompatible feature bit 40", ex.Message);
    }

    [QemuFact]
    public async Task Encrypted_image_is_refused_clearly()
    {
        string img = _dir.File("enc.qcow2");
        // qemu-img times its LUKS key derivation by CPU usage and gives up ("Unable to get accurate
        // CPU usage") when a loaded machine makes the measurement meaningless: try a few times.
        QemuTools.Result create = null!;
        for (int attempt = 0; attempt < 5; attempt++)
        {
            create = QemuTools.QemuImg("create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=123456",
                "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=250", img, "8M");
            if (create.ExitCode == 0) break;
        }
        create.EnsureSuccess();
        var ex = await Assert.ThrowsAsync<NotSupportedException>(() => Qcow2Image.OpenAsync(img));
        Assert.Contains("encrypted", ex.Message);
    }

    [QemuFact]
    public async Task Legacy_aes_encrypted_image_is_refused_clearly()
    {
        string img = MakeImage();
        ImageFileBytes.WriteU32(img, 32, 1); // crypt_method = 1 (AES)
        var ex = await Assert.ThrowsAsync<NotSupportedException>(() => Qcow2Image.OpenAsync(img));
        Assert.Contains("encrypted", ex.Message);
    }

    [QemuFact]
    public async Task L1_table_outside_the_file_is_refused_before_it_is_allocated()
    {
        string img = MakeImage();
        WriteU64(img, 40, 1UL << 50);
        var ex = await Assert.ThrowsAsync<Qcow2ImageCorruptException>(() => Qcow2Image.OpenAsync(img));
        Assert.Contains("l1_table_offset", ex.Message);
    }

    [QemuFact]
    public async Task Backing_chain_that_loops_is_refused()
    {
        string a = _dir.File("a.qcow2"), b = _dir.File("b.qcow2");
        Qemu("create", "-q", "-f", "qcow2", a, "8M");
        Qemu("create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b);
        Qemu("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a);
        var ex = await Assert.ThrowsAsync<InvalidDataException>(() => Qcow2Image.OpenAsync(b));
        Assert.Contains("loops", ex.Message);
    }

    [QemuFact]
    public async Task Backing_chain_deeper_than_the_limit_is_refused()
    {
        Qemu("create", "-q", "-f", "qcow2", _dir.File("0.qcow2"), "1M");
        for (int i = 1; i <= 4; i++)
            Qemu("create", "-q", "-f", "qcow2", "-b", $"{i - 1}.qcow2", "-F", "qcow2", _dir.File($"{i}.qcow2"));
        var ex = await Assert.ThrowsAsync<InvalidDataException>(() =>
            Qcow2Image.OpenAsync(_dir.File("4.qcow2"), new Qcow2OpenOptions { MaxBackingDepth = 3 }));
        Assert.Contains("deeper than 3", ex.Message);
        await using var ok = await Qcow2Image.OpenAsync(_dir.File("4.qcow2"), new Qcow2OpenOptions { MaxBackingDepth = 4 });
    }

    [QemuFact]
    public void Damaged_image_makes_the_cli_print_one_line_and_exit_1()
    {
        string img = MakeImage();
        long l2 = L2TableOffset(img);
        WriteU64(img, l2, ReadU64(img, l2) | 0x0200_0000_0000_0000);
        var r = QemuTools.Q2a("convert", "-O", "raw", img, _dir.File("out.raw"));
        Assert.Equal(1, r.ExitCode);
        var line = Assert.Single(r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("q2a: corrupt image at guest offset 0", line);
    }
}
