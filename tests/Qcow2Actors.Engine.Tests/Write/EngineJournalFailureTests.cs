using Akka.Persistence;
using Akka.Persistence.TestKit;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Engine.Tests.Journal;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// Journal trouble as the engine meets it: the image host runs on Akka.Persistence.TestKit's
/// interceptable journal (chosen by <c>qcow2actors.journal.plugin-id</c>), whose writes the
/// tests make fail, reject or hold. A flush is acknowledged only once its batch is durable;
/// a journal that cannot take the batch turns the image read-only and says so.
/// </summary>
public sealed class EngineJournalFailureTests : IAsyncLifetime
{
    private const string TestJournalId = "akka.persistence.journal.test";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly TempDir _dir = new();
    private ImageHost _host = null!;
    private ITestJournal _journal = null!;

    public Task InitializeAsync()
    {
        (_host, _journal) = HostOnTestJournal("0s");
        return Task.CompletedTask;
    }

    /// <summary>An image host whose journal is the interceptable test journal, and a handle on that journal.</summary>
    private static (ImageHost Host, ITestJournal Journal) HostOnTestJournal(string checkpointInterval, TimeProvider? time = null)
    {
        var host = ImageHost.Create($$"""
            akka.loglevel = OFF
            akka.stdout-loglevel = OFF
            qcow2actors.engine.checkpoint-interval = {{checkpointInterval}}
            qcow2actors.journal.plugin-id = "{{TestJournalId}}"
            akka.persistence.journal.test {
              class = "Akka.Persistence.TestKit.TestJournal, Akka.Persistence.TestKit"
              plugin-dispatcher = "akka.actor.default-dispatcher"
            }
            """, timeProvider: time);
        return (host, TestJournal.FromRef(Persistence.Instance.Apply(host.System).JournalFor(TestJournalId)));
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _dir.Dispose();
    }

    private Task<Qcow2Image> NewImage(string name) =>
        _host.CreateAsync(_dir.File(name), new Qcow2CreateOptions { Size = 4 << 20, ClusterSize = 65536 });

    private static byte[] Bytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    private static async Task AssertWritesRefused(Qcow2Image image)
    {
        await Assert.ThrowsAsync<IOException>(async () => await image.WriteAsync(1 << 20, Bytes(4096, 9)).AsTask().WaitAsync(Timeout));
        await Assert.ThrowsAsync<IOException>(async () => await image.WriteZeroesAsync(0, 65536).AsTask().WaitAsync(Timeout));
    }

    [Fact]
    public Task A_failed_journal_write_fails_the_flush_and_turns_the_image_read_only() =>
        AssertBrokenJournalWriteFailsTheFlushAndTurnsReadOnly("fail.qcow2", 1, () => _journal.OnWrite.Fail());

    [Fact]
    public Task A_rejected_journal_write_fails_the_flush_and_turns_the_image_read_only() =>
        AssertBrokenJournalWriteFailsTheFlushAndTurnsReadOnly("reject.qcow2", 2, () => _journal.OnWrite.Reject());

    // A failed write (the plugin threw) and a rejected one (it refused the batch) reach the
    // engine by different Akka.Persistence messages; both must end the same way.
    private async Task AssertBrokenJournalWriteFailsTheFlushAndTurnsReadOnly(string name, int seed, Func<Task> breakJournal)
    {
        var image = await NewImage(name);
        await image.WriteAsync(0, Bytes(100_000, seed));
        await breakJournal();

        var error = await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync().AsTask().WaitAsync(Timeout));
        Assert.Contains("journal", error.Message);
        Assert.True(image.IsReadOnly);
        Assert.Contains("journal", image.ReadOnlyReason);
        await AssertWritesRefused(image);
        await _journal.OnWrite.Pass();
        await image.DisposeAsync().AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public async Task A_flush_after_a_failed_journal_write_fails_instead_of_hanging()
    {
        // Akka.Persistence stops a persistent actor whose write failed: a later flush must not
        // be sent into the void and wait forever.
        var image = await NewImage("after-fail.qcow2");
        await image.WriteAsync(0, Bytes(100_000, 3));
        await _journal.OnWrite.Fail();
        await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync().AsTask().WaitAsync(Timeout));
        await _journal.OnWrite.Pass();

        // A hang shows as a TimeoutException, not the IOException expected.
        await Assert.ThrowsAsync<IOException>(() => image.FlushAsync().AsTask().WaitAsync(Timeout));
        await image.DisposeAsync().AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public async Task A_flush_after_a_rejected_journal_write_fails_at_once()
    {
        var image = await NewImage("after-reject.qcow2");
        await image.WriteAsync(0, Bytes(100_000, 4));
        await _journal.OnWrite.Reject();
        await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync().AsTask().WaitAsync(Timeout));
        await _journal.OnWrite.Pass();
        await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync().AsTask().WaitAsync(Timeout));
        await image.DisposeAsync().AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public async Task An_image_whose_journal_write_failed_still_closes_after_a_timed_checkpoint()
    {
        // A timed checkpoint on an image whose journal actor has stopped must not wait forever
        // for that journal's flush and so block the image actor, and with it the close.
        var time = new FakeTimeProvider();
        var (host, journal) = HostOnTestJournal("300ms", time);
        await using var _ = host;
        var image = await host.CreateAsync(_dir.File("timed.qcow2"), new Qcow2CreateOptions { Size = 4 << 20 });
        await image.WriteAsync(0, Bytes(100_000, 10));
        await journal.OnWrite.Fail();
        await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync().AsTask().WaitAsync(Timeout));
        await journal.OnWrite.Pass();
        // Three checkpoint ticks, queued at the image actor ahead of the close.
        for (int i = 0; i < 3; i++) time.Advance(TimeSpan.FromMilliseconds(300));

        // A TimeoutException here: the image actor is stuck in a checkpoint.
        await image.DisposeAsync().AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public async Task A_slow_journal_write_delays_the_flush_acknowledgement_until_it_is_durable()
    {
        var image = await NewImage("slow.qcow2");
        await image.WriteAsync(0, Bytes(100_000, 5));
        var gate = await JournalWriteGate.CloseOn(_journal);

        var flush = image.FlushAsync().AsTask();
        await gate.Entered.WaitAsync(Timeout);
        Assert.False(flush.IsCompleted, "the flush was acknowledged before its journal batch was written");
        gate.Open();
        await flush.WaitAsync(Timeout);
        Assert.False(image.IsReadOnly, image.ReadOnlyReason);
        await _journal.OnWrite.Pass();
        await image.DisposeAsync().AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public async Task A_flush_with_no_new_metadata_does_not_wait_for_the_journal()
    {
        var image = await NewImage("owned.qcow2");
        await image.WriteAsync(0, Bytes(65536, 6));
        await image.FlushAsync().AsTask().WaitAsync(Timeout);
        // An overwrite of an owned cluster changes no metadata: its flush is the data fdatasync alone,
        // and completes while every journal write is held.
        var gate = await JournalWriteGate.CloseOn(_journal);
        await image.WriteAsync(0, Bytes(65536, 7));
        await image.FlushAsync().AsTask().WaitAsync(Timeout);
        Assert.False(gate.Entered.IsCompleted, "the flush of an owned-cluster overwrite wrote to the journal");
        gate.Open();
        await _journal.OnWrite.Pass();
        await image.DisposeAsync().AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public async Task Flushed_writes_before_a_journal_failure_are_still_read_after_reopening()
    {
        var path = _dir.File("before-fail.qcow2");
        var model = new byte[4 << 20];
        var image = await _host.CreateAsync(path, new Qcow2CreateOptions { Size = model.Length, ClusterSize = 65536 });
        var first = Bytes(300_000, 8);
        await image.WriteAsync(0, first);
        first.CopyTo(model, 0);
        await image.FlushAsync();

        await image.WriteAsync(2 << 20, Bytes(300_000, 9)); // never acknowledged
        await _journal.OnWrite.Fail();
        await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync().AsTask().WaitAsync(Timeout));
        await _journal.OnWrite.Pass();
        await image.DisposeAsync().AsTask().WaitAsync(Timeout);

        // Same host, so the test journal still holds the acknowledged batch.
        await using var reopened = await _host.OpenAsync(path).WaitAsync(Timeout);
        var back = new byte[300_000];
        await reopened.ReadAsync(0, back);
        Assert.Equal(first, back);
    }
}

/// <summary>
/// A failed fsync on the default file journal: the image turns read-only, and what earlier
/// flushes acknowledged must survive closing it and reopening.
/// </summary>
public sealed class FileJournalFsyncFailureTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A host file whose fsync can be made to fail, as after a lost write-back error.</summary>
    private sealed class FlushFaultDevice(IBlockDevice inner, Func<bool> failFlush) : DelegatingDevice(inner)
    {
        protected override ValueTask FlushCoreAsync(CancellationToken cancellationToken)
        {
            if (failFlush()) throw new IOException("Input/output error (simulated EIO on fsync)");
            return Inner.FlushAsync(cancellationToken);
        }
    }

    [QemuFact]
    public async Task Writes_acknowledged_before_a_failed_fsync_survive_closing_the_read_only_image()
    {
        var path = _dir.File("eio.qcow2");
        ImageCreator.Create(path, new Qcow2CreateOptions { Size = 4 << 20, ClusterSize = 65536 });
        bool failFlush = false;
        var options = new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, writable) => new FlushFaultDevice(FileBlockDevice.Open(p, writable), () => Volatile.Read(ref failFlush)),
        };
        var acknowledged = new byte[300_000];
        new Random(21).NextBytes(acknowledged);
        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            var image = await host.OpenAsync(path, options);
            await image.WriteAsync(0, acknowledged);
            await image.FlushAsync(); // acknowledged: durable from here on
            await image.WriteAsync(2 << 20, new byte[300_000]);
            Volatile.Write(ref failFlush, true);
            await Assert.ThrowsAsync<IOException>(async () => await image.FlushAsync().AsTask().WaitAsync(Timeout));
            Assert.True(image.IsReadOnly);
            Volatile.Write(ref failFlush, false);
            await image.DisposeAsync().AsTask().WaitAsync(Timeout);
        }

        await using (var host = ImageHost.Create("qcow2actors.engine.checkpoint-interval = 0s"))
        {
            await using var reopened = await host.OpenAsync(path);
            var back = new byte[acknowledged.Length];
            await reopened.ReadAsync(0, back);
            Assert.Equal(acknowledged, back);
        }
        QemuTools.AssertCheckClean(path);
    }
}
