using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Metadata;
using Qcow2Actors.Engine.Write;

namespace Qcow2Actors.Engine.Tests.Write;

/// <summary>A write's records are encoded as they are appended; one the journal cannot encode fails the image like a journal write.</summary>
public sealed class JournalActorEncodingTests : HostedImageTests
{
    /// <summary>A record kind the journal has no encoding for.</summary>
    private sealed record UnknownRecord : MetadataRecord;

    [Fact]
    public async Task A_record_the_journal_cannot_encode_makes_the_image_read_only_and_fails_the_next_flush()
    {
        var path = Dir.File("unencodable.qcow2");
        await using var image = await Host.CreateAsync(path, new Qcow2CreateOptions { Size = 4 * 1024 * 1024 });
        await image.WriteAsync(0, new byte[4096]);

        var durable = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        image.WriteContext!.JournalRecords.Append([new SetRefcount(1, 1), new UnknownRecord()], durable: durable);

        var error = await Assert.ThrowsAsync<ArgumentException>(() => durable.Task.WaitAsync(TimeSpan.FromSeconds(15)));
        Assert.Contains("UnknownRecord", error.Message);
        await Assert.ThrowsAnyAsync<IOException>(async () => await image.FlushAsync());
        Assert.Contains("cannot be encoded", image.ReadOnlyReason);
    }
}
