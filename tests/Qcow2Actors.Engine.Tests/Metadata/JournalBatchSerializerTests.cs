using Qcow2Actors.Engine.Metadata;

namespace Qcow2Actors.Engine.Tests.Metadata;

/// <summary>
/// The serializer is internal: Akka finds it by the type name in reference.conf and creates it by
/// reflection. These show that binding still picks it, and that a batch of every record kind round-trips.
/// </summary>
public sealed class JournalBatchSerializerTests
{
    [Fact]
    public async Task The_engine_configuration_binds_journal_batches_to_the_internal_serializer()
    {
        await using var host = ImageHost.Create("", "serializer-binding");
        var serializer = host.System.Serialization.FindSerializerFor(new JournalBatch([]));

        Assert.IsType<JournalBatchSerializer>(serializer);
        Assert.Equal(JournalBatchSerializer.Id, serializer.Identifier);
    }

    [Fact]
    public async Task A_batch_of_every_record_kind_comes_back_equal()
    {
        await using var host = ImageHost.Create("", "serializer-roundtrip");
        var batch = new JournalBatch(
        [
            new SetL1Entry(3, 0x8000_0000_0001_0000),
            new SetL2Entry(0x30000, 7, 0x8000_0000_0005_0000, 0xFFFF_0000),
            new SetRefcount(12, 2),
            new SetRefcountTableEntry(0, 0x20000),
            new NewTable(TableKind.L2, 0x40000, 0x10000),
            new SetHeaderField(HeaderField.Size, 1UL << 30),
            new BitmapTracked("backup-ü", 0x50000),
            new BitmapRangesSet([(0, 65536), (1L << 40, 512)]),
            new BitmapRangesSet([]),
        ]);
        var serializer = host.System.Serialization.FindSerializerFor(batch);

        var back = serializer.FromBinary<JournalBatch>(serializer.ToBinary(batch));

        Assert.Equal(batch.Records, back.Records);
    }
}
