using System.Security.Cryptography;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests;

/// <summary>
/// Read-only opens of an image a crash left journal-pending: they see what recovery will leave
/// (the same recovery, run on a copy-on-write overlay) and never write the image or its journal.
/// </summary>
public sealed class PendingJournalTests : IDisposable
{
    private const int Size = 4 << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Allocating writes, a zero write and a discard, flushed, then the host goes away without a close.</summary>
    private async Task<(string Path, byte[] Model)> CrashAsync(string name, string hocon = "")
    {
        var path = _dir.File(name);
        var model = new byte[Size];
        var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s\n" + hocon);
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = Size, ClusterSize = 65536 });
        var rng = new Random(11);
        for (int i = 0; i < 20; i++)
        {
            int len = rng.Next(1, 150_000);
            long off = rng.NextInt64(0, Size - len);
            var data = new byte[len];
            rng.NextBytes(data);
            await image.WriteAsync(off, data);
            data.CopyTo(model, off);
        }
        await image.WriteZeroesAsync(65536, 131072);
        Array.Clear(model, 65536, 131072);
        await image.DiscardAsync(1 << 20, 65536);
        Array.Clear(model, 1 << 20, 65536);
        await image.FlushAsync();
        await host.DisposeAsync();
        Assert.True(PendingJournal.IsPending(path));
        return (path, model);
    }

    private static async Task<byte[]> ReadGuestAsync(Qcow2Image image)
    {
        var bytes = new byte[image.VirtualSize];
        await image.ReadAsync(0, bytes);
        return bytes;
    }

    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    [Fact]
    public async Task A_read_only_open_reads_the_recovered_image_byte_for_byte_and_writes_nothing()
    {
        var (path, model) = await CrashAsync("crash.qcow2");
        string journal = path + ".journal";
        string imageHash = Hash(path), journalHash = Hash(journal);

        await using (var image = await Qcow2Image.OpenAsync(path))
            Assert.Equal(model, await ReadGuestAsync(image));
        byte[] overlay;
        using (var device = PendingJournal.OpenRecovered(path))
        {
            Assert.IsType<CopyOnWriteBlockDevice>(device);
            overlay = new byte[device.Length];
            device.Read(overlay, 0);
        }
        Assert.Equal(imageHash, Hash(path));
        Assert.Equal(journalHash, Hash(journal));
        Assert.Equal(2, Directory.GetFiles(_dir.Path).Length);

        // What recovery then leaves on disk is the image the overlay showed, every byte of it.
        await using (var host = ImageHost.Create())
        {
            var recovered = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false });
            await recovered.DisposeAsync();
        }
        Assert.False(PendingJournal.IsPending(path));
        Assert.Equal(overlay, await File.ReadAllBytesAsync(path));
    }

    [Fact]
    public async Task A_host_whose_journal_lives_in_a_directory_finds_it_there_for_read_only_opens()
    {
        var journals = Directory.CreateDirectory(_dir.File("journals")).FullName;
        string hocon = $"akka.persistence.journal.qcow2-file.dir = \"{journals}\"";
        var (path, model) = await CrashAsync("dir.qcow2", hocon);
        Assert.False(File.Exists(path + ".journal"));

        await using var host = ImageHost.Create(hocon);
        await using var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = true });
        Assert.Equal(model, await ReadGuestAsync(image));
        Assert.True(PendingJournal.IsPending(path));
    }

    [Fact]
    public async Task A_host_with_another_journal_plugin_refuses_a_pending_image_read_only_naming_recover()
    {
        var (path, _) = await CrashAsync("plugin.qcow2");
        await using var host = ImageHost.Create("qcow2actors.journal.plugin-id = \"akka.persistence.journal.inmem\"");
        var e = await Assert.ThrowsAsync<IOException>(() => host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = true }));
        Assert.Contains("akka.persistence.journal.inmem", e.Message, StringComparison.Ordinal);
        Assert.Contains("q2a recover", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_its_journal_a_read_only_open_fails_naming_recover_rebuild_unless_asked_to_rebuild()
    {
        var (path, _) = await CrashAsync("missing.qcow2");
        File.Delete(path + ".journal");
        string imageHash = Hash(path);

        var e = await Assert.ThrowsAsync<IOException>(() => Qcow2Image.OpenAsync(path));
        Assert.Contains("is missing", e.Message, StringComparison.Ordinal);
        Assert.Contains("q2a recover --rebuild", e.Message, StringComparison.Ordinal);
        Assert.Throws<IOException>(() => PendingJournal.OpenRecovered(path));

        // Asked to, the read-only open shows what `recover --rebuild` leaves (the last checkpoint's tables).
        byte[] shown;
        await using (var image = await Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { RebuildWithoutJournal = true }))
            shown = await ReadGuestAsync(image);
        Assert.Equal(imageHash, Hash(path));
        Assert.False(File.Exists(path + ".journal"));
        await using (var host = ImageHost.Create())
        {
            var rebuilt = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false, RebuildWithoutJournal = true });
            await rebuilt.DisposeAsync();
        }
        await using (var image = await Qcow2Image.OpenAsync(path))
            Assert.Equal(shown, await ReadGuestAsync(image));
    }

    [Fact]
    public async Task Beside_a_live_writer_a_pending_header_with_no_journal_is_not_called_lost()
    {
        var (path, _) = await CrashAsync("live.qcow2");
        File.Delete(path + ".journal");
        // Stands in for another process writing the image, caught by -U between its checkpoint's header write and journal truncation.
        using (ImageLock.Acquire(path, LockMode.Writer))
        {
            var e = await Assert.ThrowsAsync<IOException>(() => Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { ForceShare = true }));
            Assert.Contains("being written by another process", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("--rebuild", e.Message, StringComparison.Ordinal);
        }
        // With nobody writing it, the same state is a lost journal again.
        var lost = await Assert.ThrowsAsync<IOException>(() => Qcow2Image.OpenAsync(path, new Qcow2OpenOptions { ForceShare = true }));
        Assert.Contains("q2a recover --rebuild", lost.Message, StringComparison.Ordinal);
    }
}
