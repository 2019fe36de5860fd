using Qcow2Actors.Engine.Create;
using Qcow2Actors.Format;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// The engine's crash contract on each journal plugin it can run on (a subclass per plugin):
/// a crash is the image host going away with the image never closed, so nothing is
/// checkpointed and the journal holds the only copy of the flushed metadata. QEMU must refuse
/// such an image by our feature name; a new host replays it; the result is check-clean and
/// equal to the model of everything flushed.
/// </summary>
public abstract class EngineCrashRecoveryTests : IDisposable
{
    private const long DiskSize = 8L << 20;

    protected TempDir Dir { get; } = new();

    /// <summary>HOCON for a host that journals to this plugin (a new host per "process").</summary>
    protected abstract string HostConfig { get; }

    private ImageHost NewHost() => ImageHost.Create(
        "qcow2actors.engine.checkpoint-interval = 0s\n" + HostConfig);

    private static async Task RandomWrites(Qcow2Image image, byte[] model, Random rng, int count, int maxLength = 200_000)
    {
        for (int i = 0; i < count; i++)
        {
            int len = rng.Next(1, maxLength);
            long off = rng.NextInt64(0, model.Length - len);
            var data = new byte[len];
            rng.NextBytes(data);
            await image.WriteAsync(off, data);
            data.CopyTo(model, off);
        }
    }

    private static void AssertRefusedByQemuForOurJournal(string path)
    {
        var info = QemuTools.QemuImg("info", path);
        Assert.NotEqual(0, info.ExitCode);
        Assert.Contains(FeatureNameTable.JournalPendingName, info.StdErr);
    }

    private void AssertCheckCleanAndEqual(string path, byte[] model)
    {
        var check = QemuTools.QemuImg("check", path);
        Assert.True(check.ExitCode == 0, check.StdOut + check.StdErr);
        Assert.Contains("No errors were found", check.StdOut);
        Assert.DoesNotContain("leaked", check.StdOut);
        var raw = Dir.File($"model-{Guid.NewGuid():N}.raw");
        File.WriteAllBytes(raw, model);
        var cmp = QemuTools.QemuImg("compare", "-f", "qcow2", "-F", "raw", path, raw);
        Assert.True(cmp.ExitCode == 0, cmp.StdOut + cmp.StdErr);
    }

    private static async Task<byte[]> ReadAll(Qcow2Image image)
    {
        var back = new byte[image.VirtualSize];
        await image.ReadAsync(0, back);
        return back;
    }

    /// <summary>Reopens on a new host, checks the content read back, closes cleanly.</summary>
    private async Task RecoverAndCompare(string path, byte[] model)
    {
        await using (var host = NewHost())
        {
            await using var image = await host.OpenAsync(path);
            Assert.False(image.IsReadOnly, image.ReadOnlyReason);
            Assert.Equal(model, await ReadAll(image));
        }
        AssertCheckCleanAndEqual(path, model);
    }

    [QemuFact]
    public async Task Flushed_random_writes_are_replayed_by_a_new_host_after_a_crash()
    {
        var path = Dir.File("crash.qcow2");
        var model = new byte[DiskSize];
        var host = NewHost();
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 65536 });
        await RandomWrites(image, model, new Random(11), 80);
        await image.FlushAsync();
        await host.DisposeAsync(); // crash: the image is never closed

        AssertRefusedByQemuForOurJournal(path);
        await RecoverAndCompare(path, model);
    }

    [QemuFact]
    public async Task A_checkpoint_midway_then_more_flushed_writes_are_all_recovered_after_a_crash()
    {
        var path = Dir.File("checkpoint.qcow2");
        var model = new byte[DiskSize];
        var host = NewHost();
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 4096 });
        var rng = new Random(12);
        await RandomWrites(image, model, rng, 40, 50_000);
        await image.FlushAsync();
        await image.CheckpointAsync();
        // After the checkpoint the image is plain qcow2 again: QEMU reads it (sharing it with us, its writer).
        QemuTools.AssertCheckClean(path, forceShare: true);

        await RandomWrites(image, model, rng, 40, 50_000);
        await image.FlushAsync();
        await host.DisposeAsync();

        AssertRefusedByQemuForOurJournal(path);
        await RecoverAndCompare(path, model);
    }

    [QemuFact]
    public async Task Zeroes_and_discards_flushed_before_a_crash_are_replayed_without_leaks()
    {
        var path = Dir.File("zero.qcow2");
        var model = new byte[DiskSize];
        var host = NewHost();
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 4096 });
        new Random(13).NextBytes(model);
        await image.WriteAsync(0, model);
        await image.FlushAsync();
        await image.WriteZeroesAsync(8192, 5 * 4096, unmap: true);
        await image.WriteZeroesAsync(300_000, 70_000);
        await image.DiscardAsync(1 << 20, 1 << 20);
        Array.Clear(model, 8192, 5 * 4096);
        Array.Clear(model, 300_000, 70_000);
        Array.Clear(model, 1 << 20, 1 << 20);
        // Rewrite part of the freed range: the clusters may be reused only after the free is durable.
        var again = new byte[200_000];
        new Random(14).NextBytes(again);
        await image.WriteAsync((1 << 20) + 4096, again);
        again.CopyTo(model, (1 << 20) + 4096);
        await image.FlushAsync();
        await host.DisposeAsync();

        AssertRefusedByQemuForOurJournal(path);
        await RecoverAndCompare(path, model);
    }

    [QemuFact]
    public async Task An_image_recovers_from_two_crashes_in_a_row()
    {
        var path = Dir.File("twice.qcow2");
        var model = new byte[DiskSize];
        var rng = new Random(15);
        var host = NewHost();
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 65536 });
        await RandomWrites(image, model, rng, 30);
        await image.FlushAsync();
        await host.DisposeAsync();

        // The second life starts from the replayed image with an emptied journal; its batches
        // must be numbered and replayed like the first.
        host = NewHost();
        image = await host.OpenAsync(path);
        Assert.Equal(model, await ReadAll(image));
        await RandomWrites(image, model, rng, 30);
        await image.FlushAsync();
        await host.DisposeAsync();

        AssertRefusedByQemuForOurJournal(path);
        await RecoverAndCompare(path, model);
    }

    [QemuFact]
    public async Task Writes_after_the_last_flush_may_be_lost_but_the_recovered_image_is_consistent()
    {
        var path = Dir.File("unflushed.qcow2");
        var flushed = new byte[DiskSize];
        var host = NewHost();
        var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize, ClusterSize = 4096 });
        var rng = new Random(16);
        await RandomWrites(image, flushed, rng, 40, 100_000);
        await image.FlushAsync();
        // Not flushed: overwrites of owned clusters, allocations, zeroes and a discard. Like a
        // disk's volatile cache, any of them may or may not have landed.
        var unflushed = new List<(long Offset, byte[] Data)>();
        for (int i = 0; i < 40; i++)
        {
            int len = rng.Next(1, 100_000);
            long off = rng.NextInt64(0, DiskSize - len);
            var data = new byte[len];
            rng.NextBytes(data);
            await image.WriteAsync(off, data);
            unflushed.Add((off, data));
        }
        await image.WriteZeroesAsync(4096 * 100, 4096 * 30, unmap: true);
        unflushed.Add((4096 * 100, new byte[4096 * 30]));
        await image.DiscardAsync(4096 * 500, 4096 * 40);
        unflushed.Add((4096 * 500, new byte[4096 * 40]));
        await host.DisposeAsync();

        byte[] back;
        await using (var host2 = NewHost())
        {
            await using var reopened = await host2.OpenAsync(path);
            back = await ReadAll(reopened);
        }
        // Every byte reads as it was at the last flush or as one of the unflushed writes left it.
        for (long i = 0; i < back.Length; i++)
        {
            if (back[i] == flushed[i]) continue;
            if (unflushed.Any(w => i >= w.Offset && i < w.Offset + w.Data.Length && w.Data[i - w.Offset] == back[i])) continue;
            Assert.Fail($"byte {i} reads {back[i]:X2}: neither the flushed {flushed[i]:X2} nor any unflushed write's");
        }
        AssertCheckCleanAndEqual(path, back);
    }

    public void Dispose()
    {
        Dir.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>The crash contract on the default file journal (<c>image.qcow2.journal</c> beside the image).</summary>
public sealed class FileJournalEngineCrashRecoveryTests : EngineCrashRecoveryTests
{
    protected override string HostConfig => "";
}

/// <summary>The crash contract on Akka.Persistence.Sql over SQLite, chosen by <c>qcow2actors.journal.plugin-id</c>.</summary>
public sealed class SqliteJournalEngineCrashRecoveryTests : EngineCrashRecoveryTests
{
    protected override string HostConfig => $$"""
        qcow2actors.journal.plugin-id = "akka.persistence.journal.sql"
        akka.persistence.journal.sql {
          class = "Akka.Persistence.Sql.Journal.SqlWriteJournal, Akka.Persistence.Sql"
          connection-string = "Data Source={{Dir.File("journal.db")}};Pooling=False"
          provider-name = "SQLite.MS"
          auto-initialize = on
        }
        """;
}
