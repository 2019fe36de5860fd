using System.Buffers;
using System.IO.Hashing;
using Akka.Actor;
using Akka.Configuration;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Engine.Tests.Device;
using static Qcow2Actors.Engine.Tests.Journal.RecordingActor;

namespace Qcow2Actors.Engine.Tests.Journal;

/// <summary>The shared behaviours on our file journal, plus what only a file can suffer: tears, bit rot, failed fsyncs.</summary>
public sealed class FileJournalTests : JournalBehaviourTests
{
    protected override string PluginId => FileJournal.PluginId;

    protected override Config PluginConfig => ConfigurationFactory.ParseString($$"""
        akka.persistence.journal.plugin = "{{FileJournal.PluginId}}"
        akka.persistence.journal.qcow2-file.dir = "{{Dir.Path}}"
        akka.actor.serializers.refuse = "{{typeof(RefusingSerializer).AssemblyQualifiedName}}"
        akka.actor.serialization-bindings."{{typeof(Unserializable).AssemblyQualifiedName}}" = refuse
        """);

    /// <summary>An event type whose serializer always fails, to provoke a rejection.</summary>
    public sealed record Unserializable(string Text);

    /// <summary>Fails every serialization, as a broken or missing serializer binding would.</summary>
    public sealed class RefusingSerializer(ExtendedActorSystem system) : Akka.Serialization.Serializer(system)
    {
        public override int Identifier => 9901;

        public override bool IncludeManifest => false;

        public override byte[] ToBinary(object obj) => throw new InvalidOperationException($"cannot serialize {obj}");

        public override object FromBinary(byte[] bytes, Type? type) => throw new InvalidOperationException("cannot deserialize");
    }

    [Fact]
    public async Task An_event_that_cannot_be_serialized_is_rejected_and_the_journal_carries_on()
    {
        var system = NewSystem();
        var (probe, next) = ChannelActor.Create<PersistRejected>();
        var actor = system.ActorOf(RecordingActor.Props("reject", PluginId, system.ActorOf(probe)));
        actor.Tell(new AppendObject(new Unserializable("x")));
        var rejected = await next(Timeout);
        Assert.Contains("cannot serialize", rejected.Cause.Message);
        Assert.Equal(["ok"], (await Persist(actor, "ok")).Events);
        await Shutdown(system);
        var state = await Recovered("reject");
        Assert.Equal(["ok"], state.Events);
        Assert.Equal(2, state.LastSequenceNr);
    }

    private static StoredEvent Event(long seq, string text) =>
        new(seq, 1000 + seq, 4, "", "", "writer", System.Text.Encoding.UTF8.GetBytes(text));

    private static IReadOnlyList<IReadOnlyList<StoredEvent>> Writes(params long[][] batches) =>
        batches.Select(b => (IReadOnlyList<StoredEvent>)b.Select(s => Event(s, $"event {s}")).ToList()).ToList();

    private static List<long> ReplayAll(string path)
    {
        using var file = new JournalFile(path, 1 << 20);
        var seqs = new List<long>();
        file.Replay(1, long.MaxValue, long.MaxValue, e => seqs.Add(e.SequenceNr));
        return seqs;
    }

    [Fact]
    public async Task Journal_file_is_named_by_the_escaped_persistence_id_in_dir()
    {
        var actor = await Start(NewSystem(), "tenant/1 image");
        await Persist(actor, "e");
        Assert.True(File.Exists(Path.Combine(Dir.Path, "tenant%2F1%20image.journal")));
    }

    [Fact]
    public async Task A_registered_persistence_id_uses_its_registered_file()
    {
        var system = NewSystem();
        var target = Dir.File(Path.Combine("images", "vm1.qcow2.journal"));
        FileJournalPaths.Get(system).Register("vm1", target);
        var actor = await Start(system, "vm1");
        await Persist(actor, "e");
        Assert.True(File.Exists(target));
        Assert.False(File.Exists(Dir.File("vm1.journal")));
    }

    [Fact]
    public async Task Without_a_dir_the_journal_lies_beside_the_image_named_by_the_id()
    {
        var config = ConfigurationFactory.ParseString("""
            akka.loglevel = WARNING
            akka.persistence.journal.plugin = "akka.persistence.journal.qcow2-file"
            akka.persistence.snapshot-store.plugin = "akka.persistence.no-snapshot-store"
            """).WithFallback(FileJournal.ReferenceConfig);
        using var system = ActorSystem.Create("beside", config);
        var image = Dir.File("disk.qcow2");
        var actor = system.ActorOf(RecordingActor.Props(image, FileJournal.PluginId));
        await actor.Ask<State>(new Append(["e"]), Timeout);
        Assert.True(File.Exists(image + ".journal"));
        await system.Terminate();
    }

    [Fact]
    public async Task Releasing_a_persistence_id_closes_its_file_and_a_later_use_reopens_it()
    {
        var system = NewSystem();
        var actor = await Start(system, "released");
        await Persist(actor, "1");
        var journal = Akka.Persistence.Persistence.Instance.Apply(system).JournalFor(PluginId);
        var reply = await journal.Ask<FileJournal.Released>(new FileJournal.Release("released"), Timeout);
        Assert.Equal("released", reply.PersistenceId);
        // With the handle closed the file can be replaced; the next write rescans it.
        Assert.Equal(["1", "2"], (await Persist(actor, "2")).Events);
        await Stop(actor);
        Assert.Equal(["1", "2"], (await Recovered("released", system)).Events);
    }

    [Fact]
    public void A_torn_last_record_is_dropped_at_every_length_and_earlier_records_survive()
    {
        var path = Dir.File("torn.journal");
        using (var file = new JournalFile(path, 1 << 20))
        {
            file.Append(Writes([1, 2], [3]));
        }
        var goodEnd = new FileInfo(path).Length;
        using (var file = new JournalFile(path, 1 << 20))
        {
            file.Append(Writes([4, 5, 6]));
        }
        var full = File.ReadAllBytes(path);
        var copy = Dir.File("torn-copy.journal");
        for (var cut = goodEnd; cut < full.Length; cut++)
        {
            File.WriteAllBytes(copy, full[..(int)cut]);
            Assert.Equal([1, 2, 3], ReplayAll(copy));
        }
        File.WriteAllBytes(copy, full);
        Assert.Equal([1, 2, 3, 4, 5, 6], ReplayAll(copy));
    }

    [Fact]
    public void A_file_torn_inside_its_magic_is_an_empty_journal()
    {
        var path = Dir.File("new.journal");
        File.WriteAllBytes(path, "Q2AJ"u8.ToArray());
        Assert.Empty(ReplayAll(path));
        using (var file = new JournalFile(path, 1 << 20)) file.Append(Writes([1]));
        Assert.Equal([1], ReplayAll(path));
    }

    [Fact]
    public async Task A_torn_tail_is_dropped_on_recovery_and_cut_off_by_the_next_write()
    {
        var system = NewSystem();
        var actor = await Start(system, "tail");
        await Persist(actor, "1");
        await Persist(actor, "2", "3");
        await Shutdown(system);
        var path = Dir.File("tail.journal");
        var length = new FileInfo(path).Length;
        using (var f = File.OpenWrite(path)) f.SetLength(length - 5);

        system = NewSystem();
        actor = await Start(system, "tail");
        var state = await StateOf(actor);
        Assert.Equal(["1"], state.Events);
        Assert.Equal(1, state.LastSequenceNr);
        await Persist(actor, "2b");
        await Shutdown(system);

        Assert.Equal(["1", "2b"], (await Recovered("tail")).Events);
    }

    [Fact]
    public void A_corrupt_crc_in_the_middle_stops_replay_there()
    {
        var path = Dir.File("rot.journal");
        using (var file = new JournalFile(path, 1 << 20))
        {
            file.Append(Writes([1]));
        }
        var secondStart = new FileInfo(path).Length;
        using (var file = new JournalFile(path, 1 << 20))
        {
            file.Append(Writes([2], [3], [4]));
        }
        var bytes = File.ReadAllBytes(path);
        bytes[secondStart + 20] ^= 0x40; // inside record 2's payload
        File.WriteAllBytes(path, bytes);
        Assert.Equal([1], ReplayAll(path));
        using (var file = new JournalFile(path, 1 << 20))
        {
            file.EnsureLoaded();
            Assert.Equal(secondStart, file.GoodEnd);
            Assert.Equal(bytes.Length - secondStart, file.DroppedBytes);
            Assert.Equal(1, file.HighestSequenceNr);
        }
    }

    [Fact]
    public async Task A_journal_file_that_is_not_ours_fails_recovery_and_is_left_alone()
    {
        var path = Dir.File("foreign.journal");
        File.WriteAllBytes(path, "not a journal at all"u8.ToArray());
        var system = NewSystem();
        var (probe, next) = ChannelActor.Create<RecoveryFailed>();
        system.ActorOf(RecordingActor.Props("foreign", PluginId, system.ActorOf(probe)));
        var failure = await next(Timeout);
        Assert.Contains("not a qcow2actors journal", failure.Reason.ToString());
        Assert.Equal("not a journal at all"u8.ToArray(), File.ReadAllBytes(path));
    }

    [Fact]
    public void One_append_of_many_writes_is_one_fdatasync()
    {
        var device = new MemoryBlockDevice();
        using var file = new JournalFile(Dir.File("mem.journal"), 1 << 20, createNew: _ => device);
        file.Append(Writes([1], [2, 3], [4]));
        Assert.Equal(1, device.FlushCount);
        file.Append(Writes([5]));
        Assert.Equal(2, device.FlushCount);
        Assert.Equal(5, file.HighestSequenceNr);
    }

    [Fact]
    public void An_event_held_in_chunks_is_written_as_the_bytes_of_one_array_in_writes_no_larger_than_a_chunk()
    {
        var pending = new Qcow2Actors.Engine.Metadata.PendingJournalBatch();
        for (int i = 0; i < 20_000; i++)
            pending.Add([new Qcow2Actors.Engine.Metadata.SetL2Entry(0x30000, i & 8191, 0x8000_0000_0005_0000, 0), new Qcow2Actors.Engine.Metadata.SetRefcount(i, 1)]);
        var chunked = new StoredEvent(1, 1001, 4, "", "", "writer", pending.ToSequence());
        var whole = chunked with { Data = new System.Buffers.ReadOnlySequence<byte>(pending.ToSequence().ToArray()) };

        var chunkedDevice = new RecordingDevice(new MemoryBlockDevice());
        using (var file = new JournalFile(Dir.File("chunked.journal"), 1 << 22, createNew: _ => chunkedDevice))
            file.Append([[chunked], [Event(2, "after")]]);
        var wholeDevice = new MemoryBlockDevice();
        using (var file = new JournalFile(Dir.File("whole.journal"), 1 << 22, createNew: _ => wholeDevice))
            file.Append([[whole], [Event(2, "after")]]);

        Assert.Equal(wholeDevice.ToArray(), chunkedDevice.ToArray());
        Assert.All(chunkedDevice.Writes, w => Assert.InRange(w.Data.Length, 1, Qcow2Actors.Engine.Metadata.PendingJournalBatch.MaxChunkBytes));
        Assert.True(chunkedDevice.Writes.Count > 1);
        var copy = Dir.File("reopened.journal");
        File.WriteAllBytes(copy, chunkedDevice.ToArray());
        using var reopened = new JournalFile(copy, 1 << 22);
        var back = new List<StoredEvent>();
        reopened.Replay(1, long.MaxValue, long.MaxValue, back.Add);
        Assert.Equal(whole.Data.ToArray(), back[0].DataArray());
        Assert.Equal("after", System.Text.Encoding.UTF8.GetString(back[1].DataArray()));
    }

    private static Qcow2Actors.Engine.Metadata.PendingJournalBatch LongBatch(int writes)
    {
        var pending = new Qcow2Actors.Engine.Metadata.PendingJournalBatch();
        for (int i = 0; i < writes; i++)
            pending.Add([new Qcow2Actors.Engine.Metadata.SetL2Entry(0x30000, i & 8191, 0x8000_0000_0005_0000, 0), new Qcow2Actors.Engine.Metadata.SetRefcount(i, 1)]);
        return pending;
    }

    [Fact]
    public void An_append_is_laid_out_as_the_format_says()
    {
        var device = new MemoryBlockDevice();
        using (var file = new JournalFile(Dir.File("layout.journal"), 1 << 20, createNew: _ => device))
            file.Append([[new StoredEvent(7, 1234, 42, "sm", "m", "w", "data"u8.ToArray())]]);

        // Built here from the format in JournalRecords' summary, independently of the writer.
        var payload = new List<byte> { JournalRecords.EventsKind };
        payload.AddRange(BitConverter.GetBytes(7L)); // first sequence number
        payload.AddRange(BitConverter.GetBytes(7L)); // last
        payload.AddRange(BitConverter.GetBytes(1)); // event count
        payload.AddRange(BitConverter.GetBytes(7L));
        payload.AddRange(BitConverter.GetBytes(1234L));
        payload.AddRange(BitConverter.GetBytes(42));
        foreach (var str in new[] { "sm", "m", "w", "data" })
        {
            payload.AddRange(BitConverter.GetBytes(str.Length));
            payload.AddRange(System.Text.Encoding.UTF8.GetBytes(str));
        }
        var length = BitConverter.GetBytes(payload.Count);
        var crc = new Crc32(Crc32ParameterSet.Crc32C);
        crc.Append(length);
        crc.Append(payload.ToArray());
        var expected = "Q2AJRNL1"u8.ToArray().Concat(length).Concat(BitConverter.GetBytes(crc.GetCurrentHashAsUInt32())).Concat(payload).ToArray();

        Assert.Equal(expected, device.ToArray());
    }

    [Fact]
    public void A_chunked_append_that_fails_part_way_is_cut_off_by_the_next_and_never_replayed()
    {
        var device = new FaultyDevice(new MemoryBlockDevice());
        var path = Dir.File("torn.journal");
        using (var file = new JournalFile(path, 1 << 22, createNew: _ => device))
        {
            file.Append(Writes([1]));
            var chunked = new StoredEvent(2, 1002, 4, "", "", "writer", LongBatch(20_000).ToSequence());
            device.FailFromWrite = device.Writes + 3; // its first two writes land, the third fails
            device.WriteFault = new IOException("pwrite: EIO");
            Assert.Throws<IOException>(() => file.Append([[chunked]]));
            Assert.Equal(1, file.HighestSequenceNr);
            device.WriteFault = null;
            file.Append(Writes([3]));
        }
        File.WriteAllBytes(path, device.ToArray());
        Assert.Equal([1L, 3L], ReplayAll(path));
    }

    [Fact]
    public void Every_crash_state_of_a_chunked_append_replays_the_old_records_or_all_of_the_new()
    {
        var initialDevice = new MemoryBlockDevice();
        using (var file = new JournalFile(Dir.File("base.journal"), 1 << 22, createNew: _ => initialDevice))
            file.Append(Writes([1]));
        var initial = initialDevice.ToArray();
        var recorded = new RecordingDevice(new MemoryBlockDevice(initial));
        var data = LongBatch(20_000).ToSequence();
        var path = Dir.File("crash.journal");
        File.WriteAllBytes(path, initial);
        using (var file = new JournalFile(path, 1 << 22, openExisting: _ => recorded))
            file.Append([[new StoredEvent(2, 1002, 4, "", "", "writer", data)]]);
        Assert.True(recorded.Writes.Count > 2);

        int states = 0, complete = 0;
        foreach (var state in RecordingDevice.CrashStates(initial, recorded))
        {
            File.WriteAllBytes(path, state);
            using var file = new JournalFile(path, 1 << 22);
            var events = new List<StoredEvent>();
            file.Replay(1, long.MaxValue, long.MaxValue, events.Add);
            states++;
            Assert.Equal(1, events[0].SequenceNr);
            if (events.Count == 1) continue;
            Assert.Equal(2, events.Count);
            Assert.Equal(data.ToArray(), events[1].DataArray());
            complete++;
        }
        Assert.True(complete >= 1 && complete < states, $"{complete} of {states} crash states held the new record");
    }

    [Fact]
    public void After_a_failed_fsync_the_journal_file_refuses_everything()
    {
        var faulty = new FaultyDevice(new MemoryBlockDevice());
        using var file = new JournalFile(Dir.File("eio.journal"), 1 << 20, createNew: _ => faulty);
        file.Append(Writes([1]));
        faulty.FlushFault = new IOException("fdatasync: EIO");
        Assert.Throws<IOException>(() => file.Append(Writes([2])));
        faulty.FlushFault = null;
        var e = Assert.Throws<IOException>(() => file.Append(Writes([3])));
        Assert.Contains("unusable", e.Message);
        Assert.Throws<IOException>(() => file.Replay(1, long.MaxValue, long.MaxValue, _ => { }));
        Assert.Equal(2, faulty.Flushes);
    }

    [Fact]
    public void Deleting_rewrites_the_file_to_the_mark_and_the_survivors()
    {
        var path = Dir.File("compact.journal");
        using (var file = new JournalFile(path, 1 << 20))
        {
            file.Append(Writes([1, 2], [3], [4, 5]));
            file.DeleteTo(3);
            // Appends after a compaction go to the compacted file.
            file.Append(Writes([6]));
        }
        Assert.Equal([4, 5, 6], ReplayAll(path));
        Assert.False(File.Exists(path + ".compact"));

        using (var file = new JournalFile(path, 1 << 20))
        {
            file.DeleteTo(100);
            Assert.Equal(6, file.HighestSequenceNr);
        }
        // Magic + one deletion mark: the highest sequence number outlives the events.
        Assert.Equal(8 + 8 + 17, new FileInfo(path).Length);
        using (var file = new JournalFile(path, 1 << 20))
        {
            file.EnsureLoaded();
            Assert.Equal(6, file.HighestSequenceNr);
            Assert.Equal(6, file.DeletedTo);
        }
    }

    [Fact]
    public void Record_checksum_is_crc32c_castagnoli()
    {
        Assert.Equal(0xE3069283u, Crc32.HashToUInt32(Crc32ParameterSet.Crc32C, "123456789"u8));
        Assert.Equal(Crc32.HashToUInt32(Crc32ParameterSet.Crc32C, "1234567890"u8),
            JournalRecords.Checksum("1234"u8, "567890"u8));
    }

    [Theory]
    [InlineData("plain-id_1.x", "plain-id_1.x")]
    [InlineData("/var/lib/vm.qcow2", "%2Fvar%2Flib%2Fvm.qcow2")]
    [InlineData("..", "%2E.")]
    [InlineData("é", "%C3%A9")]
    public void Persistence_ids_escape_to_safe_distinct_file_names(string id, string expected) =>
        Assert.Equal(expected, FileJournalPaths.Escape(id));

    /// <summary>Sends what it receives to a channel a test awaits (a probe without a TestKit base class).</summary>
    internal sealed class ChannelActor : ReceiveActor
    {
        public ChannelActor(System.Threading.Channels.ChannelWriter<object> inbox) => ReceiveAny(m => inbox.TryWrite(m));

        public static (Akka.Actor.Props Props, Func<TimeSpan, Task<T>> Next) Create<T>()
        {
            var channel = System.Threading.Channels.Channel.CreateUnbounded<object>();
            return (Akka.Actor.Props.Create(() => new ChannelActor(channel.Writer)), async timeout =>
            {
                using var cts = new CancellationTokenSource(timeout);
                while (true)
                {
                    if (await channel.Reader.ReadAsync(cts.Token) is T t) return t;
                }
            });
        }
    }
}
