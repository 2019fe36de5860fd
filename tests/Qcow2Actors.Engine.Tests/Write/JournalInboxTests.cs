using Akka.TestKit.Xunit2;
using Qcow2Actors.Engine.Compression;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Read;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Engine.Write;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>
/// The journal inbox orders the records of every appender as they arrive, hands a flush all of them at once, and
/// tells the journal actor (a probe here) only about what it must act on: a record it cannot encode, a checkpoint due.
/// </summary>
public sealed class JournalInboxTests : TestKit
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    private async Task<(JournalInbox Inbox, Akka.TestKit.TestProbe Journal)> Start(int checkpointRecords = 1 << 20)
    {
        var (device, _) = MemoryImages.Create(16);
        var options = new Qcow2OpenOptions { ReadOnly = false, Format = "qcow2", DeviceFactory = (_, _) => new MemoryImages.Handle(device) };
        var opened = await ImageOpener.OpenAsync("/memory/inbox.qcow2", options, default);
        var layer = (Qcow2Layer)opened.Layer;
        var ctx = new ImageContext(layer.FileName, layer.File, null, opened.HeaderBlock!, layer,
            CompressionCodecs.For(0), new EngineSettings { CheckpointRecords = checkpointRecords });
        var journal = CreateTestProbe();
        ctx.Journal = journal.Ref;
        return (ctx.JournalRecords, journal);
    }

    private sealed record UnknownRecord : MetadataRecord;

    [Fact]
    public async Task A_take_returns_every_record_freed_cluster_and_waiter_in_arrival_order_and_leaves_none()
    {
        var (inbox, journal) = await Start();
        var durable = new TaskCompletionSource();
        inbox.Append([new SetRefcount(5, 1)]);
        inbox.Append([new SetRefcount(5, 0)], freed: [5]);
        inbox.Append([new SetL1Entry(0, 0x50000)], durable: durable);

        Assert.Equal(3, inbox.Count);
        var taken = inbox.Take()!;
        Assert.Equal(new MetadataRecord[] { new SetRefcount(5, 1), new SetRefcount(5, 0), new SetL1Entry(0, 0x50000) }, taken.Batch.ToBatch().Records);
        Assert.Equal(new long[] { 5 }, taken.Freed);
        Assert.Same(durable, Assert.Single(taken.Durable));
        Assert.Null(inbox.Take());
        Assert.Equal(0, inbox.Count);
        journal.ExpectNoMsg(TimeSpan.Zero);
    }

    [Fact]
    public async Task A_record_the_journal_cannot_encode_appends_nothing_fails_its_waiter_and_tells_the_journal()
    {
        var (inbox, journal) = await Start();
        inbox.Append([new SetRefcount(1, 1)]);
        var durable = new TaskCompletionSource();

        inbox.Append([new SetRefcount(2, 1), new UnknownRecord()], freed: [2], durable: durable);

        await Assert.ThrowsAsync<ArgumentException>(() => durable.Task.WaitAsync(Timeout));
        Assert.Contains("UnknownRecord", journal.ExpectMsg<JournalInbox.RecordsRejected>(Timeout).Error.Message);
        var taken = inbox.Take()!;
        Assert.Equal(new MetadataRecord[] { new SetRefcount(1, 1) }, taken.Batch.ToBatch().Records);
        Assert.Empty(taken.Freed);
        Assert.Empty(taken.Durable);
    }

    [Fact]
    public async Task Crossing_the_checkpoint_threshold_asks_for_one_checkpoint_until_it_is_taken()
    {
        var (inbox, journal) = await Start(checkpointRecords: 4);
        inbox.Append([new SetRefcount(1, 1), new SetRefcount(2, 1), new SetRefcount(3, 1)]);
        journal.ExpectNoMsg(TimeSpan.Zero);
        inbox.Append([new SetRefcount(4, 1)]);
        journal.ExpectMsg<JournalInbox.CheckpointDue>(Timeout);
        inbox.Append([new SetRefcount(5, 1), new SetRefcount(6, 1), new SetRefcount(7, 1), new SetRefcount(8, 1)]);
        journal.ExpectNoMsg(TimeSpan.FromMilliseconds(100));

        // The checkpoint wrote the tables; the 8 records still waiting count towards the next one.
        inbox.CheckpointTaken();
        inbox.Append([new SetRefcount(9, 1)]);
        journal.ExpectMsg<JournalInbox.CheckpointDue>(Timeout);
    }

    [Fact]
    public async Task Records_persisted_directly_count_towards_the_next_checkpoint()
    {
        var (inbox, journal) = await Start(checkpointRecords: 4);
        inbox.CountPersisted(3);
        inbox.Append([new SetRefcount(1, 1)]);
        journal.ExpectMsg<JournalInbox.CheckpointDue>(Timeout);
    }

    [Fact]
    public async Task Appends_from_many_threads_all_arrive_each_threads_in_its_own_order()
    {
        var (inbox, _) = await Start();
        const int Threads = 4, PerThread = 2000;
        var start = new Barrier(Threads);
        var appenders = Enumerable.Range(0, Threads).Select(t => Task.Factory.StartNew(() =>
        {
            start.SignalAndWait();
            for (int i = 0; i < PerThread; i++) inbox.Append([new SetRefcount(t, (ulong)i)], freed: [t * PerThread + i]);
        }, TaskCreationOptions.LongRunning)).ToArray();
        await Task.WhenAll(appenders).WaitAsync(Timeout);

        var taken = inbox.Take()!;
        var records = taken.Batch.ToBatch().Records.Cast<SetRefcount>().ToList();
        Assert.Equal(Threads * PerThread, records.Count);
        Assert.Equal(Threads * PerThread, taken.Freed.Distinct().Count());
        for (int t = 0; t < Threads; t++)
            Assert.Equal(Enumerable.Range(0, PerThread).Select(i => (ulong)i), records.Where(r => r.Cluster == t).Select(r => r.Value));
    }
}

/// <summary>
/// A flush journals only records appended before its fdatasync started: a write whose records arrive while the sync
/// runs may have data the sync does not cover, so they wait for the next flush.
/// </summary>
public sealed class JournalInboxFlushTests : HostedImageTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Records_appended_while_a_flush_syncs_wait_for_the_next_flush()
    {
        var path = Dir.File("inbox-flush.qcow2");
        await (await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 4 * 1024 * 1024 })).DisposeAsync();
        var gate = new FlushGate();
        await using var image = await Host.OpenAsync(path, new Qcow2OpenOptions
        {
            ReadOnly = false,
            DeviceFactory = (p, writable) => new StallingFlushDevice(FileBlockDevice.Open(p, writable), gate),
        }).WaitAsync(Timeout);
        await image.WriteAsync(0, Enumerable.Repeat((byte)1, 4096).ToArray()).AsTask().WaitAsync(Timeout);
        var inbox = image.WriteContext!.JournalRecords;
        Assert.True(inbox.Count > 0);

        gate.Close();
        var first = image.FlushAsync().AsTask();
        await gate.Entered.WaitAsync(Timeout);
        // An allocating write completes while the sync hangs; its records arrive during the sync.
        await image.WriteAsync(2 * 1024 * 1024, Enumerable.Repeat((byte)2, 4096).ToArray()).AsTask().WaitAsync(Timeout);
        int during = inbox.Count;
        gate.Open();
        await first.WaitAsync(Timeout);

        Assert.True(during > 0, "the second write appended no records");
        Assert.Equal(during, inbox.Count);
        await image.FlushAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal(0, inbox.Count);
    }
}
