using System.Buffers;
using Akka.Actor;
using Akka.Configuration;
using CsCheck;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Write;
using Qcow2Actors.Engine.Tests.Journal;

namespace Qcow2Actors.Engine.Tests.Metadata;

/// <summary>
/// The journal actor keeps the records of an unflushed batch encoded, in chunks: these show the chunks hold exactly
/// the bytes the serializer writes for the same records, however they arrived, and that they read back as a batch.
/// </summary>
public sealed class PendingJournalBatchTests
{
    private static readonly Gen<MetadataRecord> Record = Gen.OneOf<MetadataRecord>(
        Gen.Select(Gen.Int[0, 1 << 20], Gen.ULong, (i, v) => new SetL1Entry(i, v)),
        Gen.Select(Gen.Long[0, 1L << 50], Gen.Int[0, 8191], Gen.ULong, Gen.ULong, (t, i, w0, w1) => new SetL2Entry(t, i, w0, w1)),
        Gen.Select(Gen.Long[0, 1L << 40], Gen.ULong, (c, v) => new SetRefcount(c, v)),
        Gen.Select(Gen.Int[0, 1 << 16], Gen.ULong, (i, v) => new SetRefcountTableEntry(i, v)),
        Gen.Select(Gen.Enum<TableKind>(), Gen.Long[0, 1L << 50], Gen.Long[0, 1L << 30], (k, o, l) => new NewTable(k, o, l)),
        Gen.Select(Gen.Enum<HeaderField>(), Gen.ULong, (f, v) => new SetHeaderField(f, v)),
        Gen.Select(Gen.String[Gen.Char.AlphaNumeric, 0, 40], Gen.Long[0, 1L << 40], (n, t) => new BitmapTracked(n, t)),
        Gen.Select(Gen.Long[0, 1L << 40], Gen.Long[0, 1L << 20], Gen.Int[0, 12], (o, l, n) =>
            new BitmapRangesSet(Enumerable.Range(0, n).Select(k => (o + k * l, l)).ToArray())));

    [Fact]
    public void Records_added_in_any_grouping_encode_to_the_bytes_the_serializer_writes_for_them()
    {
        // Up to 60 groups of up to 400 records: from one small chunk to batches that cross the largest chunk size.
        Gen.Select(Record.Array[0, 400], Gen.Int[0, 3]).Array[0, 60].Sample(groups =>
        {
            var pending = new PendingJournalBatch();
            var all = new List<MetadataRecord>();
            foreach (var (records, repeat) in groups)
                for (int r = 0; r <= repeat; r++)
                {
                    pending.Add(records);
                    all.AddRange(records);
                }

            var expected = JournalBatchSerializer.Encode(new JournalBatch(all));
            Assert.Equal(expected, pending.ToSequence().ToArray());
            Assert.Equal(all.Count, pending.Count);
            Assert.Equal(expected.Length - JournalBatchSerializer.HeaderLength, pending.RecordBytes);
        }, iter: 60);
    }

    [Fact]
    public void A_record_larger_than_a_chunk_gets_a_chunk_of_its_own_and_the_batch_reads_back()
    {
        var ranges = Enumerable.Range(0, 10_000).Select(k => ((long)k << 20, 4096L)).ToArray(); // ~160 KB encoded
        var records = new List<MetadataRecord> { new SetRefcount(1, 1), new BitmapRangesSet(ranges), new SetL1Entry(2, 3) };
        var pending = new PendingJournalBatch();
        pending.Add(records[..1]);
        pending.Add(records[1..]);

        var sequence = pending.ToSequence();
        Assert.Equal(JournalBatchSerializer.Encode(new JournalBatch(records)), sequence.ToArray());
        Assert.Contains(Segments(sequence), s => s > PendingJournalBatch.MaxChunkBytes);
        var back = pending.ToBatch();
        Assert.Equal(JournalBatchSerializer.Encode(new JournalBatch(records)), JournalBatchSerializer.Encode(back));
    }

    [Fact]
    public void A_long_batch_is_held_in_chunks_no_larger_than_the_largest_chunk()
    {
        var pending = new PendingJournalBatch();
        for (int i = 0; i < 65_536; i++) pending.Add([new SetL2Entry(0x30000, i & 8191, 0x8000_0000_0005_0000, 0), new SetRefcount(i, 1)]);

        var sizes = Segments(pending.ToSequence());
        Assert.All(sizes, s => Assert.InRange(s, 0, PendingJournalBatch.MaxChunkBytes));
        Assert.Equal(JournalBatchSerializer.HeaderLength + 65_536L * (29 + 17), sizes.Sum(s => (long)s));
    }

    /// <summary>A record kind the journal has no encoding for.</summary>
    private sealed record UnknownRecord : MetadataRecord;

    [Fact]
    public void A_group_with_a_record_the_journal_cannot_encode_adds_nothing()
    {
        var pending = new PendingJournalBatch();
        pending.Add([new SetRefcount(1, 1)]);
        var before = pending.ToSequence().ToArray();

        Assert.Throws<ArgumentException>(() => pending.Add([new SetRefcount(2, 1), new NewTable(TableKind.L2, 0, 65536), new UnknownRecord()]));

        Assert.Equal(1, pending.Count);
        Assert.Empty(pending.NewTables);
        Assert.Equal(before, pending.ToSequence().ToArray());
    }

    [Fact]
    public void New_tables_are_listed_in_the_order_they_were_added()
    {
        var pending = new PendingJournalBatch();
        pending.Add([new SetRefcount(1, 1), new NewTable(TableKind.RefcountBlock, 0x10000, 0x10000)]);
        pending.Add([new NewTable(TableKind.L2, 0x20000, 0x10000), new SetL1Entry(0, 0x20000)]);

        Assert.Equal([TableKind.RefcountBlock, TableKind.L2], pending.NewTables);
    }

    [Fact]
    public async Task The_engine_configuration_serializes_a_pending_batch_as_the_journal_batch_it_reads_back_as()
    {
        await using var host = ImageHost.Create("", "pending-serializer");
        var records = new MetadataRecord[] { new SetL2Entry(0x30000, 7, 0x8000_0000_0005_0000, 0), new SetRefcount(5, 1) };
        var pending = new PendingJournalBatch();
        pending.Add(records);
        var serializer = host.System.Serialization.FindSerializerFor(pending);

        Assert.IsType<JournalBatchSerializer>(serializer);
        var bytes = serializer.ToBinary(pending);
        Assert.Equal(bytes, ((ISequenceSerializer)serializer).ToSequence(pending).ToArray());
        Assert.Equal(records, serializer.FromBinary<JournalBatch>(bytes).Records);
    }

    [Fact]
    public async Task A_journal_plugin_that_keeps_event_objects_replays_a_pending_batch_as_its_records()
    {
        var config = ConfigurationFactory.ParseString("akka.persistence.journal.plugin = \"akka.persistence.journal.inmem\"")
            .WithFallback(FileJournal.ReferenceConfig);
        using var system = ActorSystem.Create("pending-inmem", config);
        var records = new MetadataRecord[] { new NewTable(TableKind.L2, 0x40000, 0x10000), new SetL1Entry(0, 0x40000) };
        var pending = new PendingJournalBatch();
        pending.Add(records);
        var writer = system.ActorOf(RecordingActor.Props("img", "akka.persistence.journal.inmem"));
        await writer.Ask<RecordingActor.State>(new RecordingActor.AppendObject(pending), TimeSpan.FromSeconds(15));

        var recovered = new TaskCompletionSource<JournalRecovered>(TaskCreationOptions.RunContinuationsAsynchronously);
        var settings = new EngineSettings { JournalPluginId = "akka.persistence.journal.inmem" };
        system.ActorOf(Props.Create(() => new ReplayParent("img", settings, recovered)));
        var batches = (await recovered.Task.WaitAsync(TimeSpan.FromSeconds(15))).Batches;

        Assert.Equal(records, Assert.Single(batches).Records);
        await system.Terminate();
    }

    private static List<int> Segments(System.Buffers.ReadOnlySequence<byte> sequence)
    {
        var sizes = new List<int>();
        foreach (var segment in sequence) sizes.Add(segment.Length);
        return sizes;
    }

    /// <summary>Starts a replay actor as its child and hands on what it recovers.</summary>
    private sealed class ReplayParent : ReceiveActor
    {
        public ReplayParent(string persistenceId, EngineSettings settings, TaskCompletionSource<JournalRecovered> recovered)
        {
            Context.ActorOf(Props.Create(() => new ReplayActor(persistenceId, settings)));
            Receive<JournalRecovered>(m => recovered.TrySetResult(m));
        }
    }
}
