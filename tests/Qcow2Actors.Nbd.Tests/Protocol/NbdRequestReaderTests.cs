using System.IO.Pipelines;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

/// <summary>The request reader decodes the 28-byte header field by field, however the bytes arrive.</summary>
public sealed class NbdRequestReaderTests
{
    [Fact]
    public void A_request_header_decodes_field_by_field()
    {
        var bytes = RawNbdClient.Request(0x0005, 7, 0x0102030405060708, 0x1122334455667788, 0xAABBCCDD);
        Assert.Equal(new NbdRequest(5, 7, 0x0102030405060708, 0x1122334455667788, 0xAABBCCDD), NbdRequestReader.Parse(bytes));
    }

    [Fact]
    public async Task A_header_arriving_in_pieces_is_read_whole_then_a_bad_magic_and_a_truncated_header_are_told_apart()
    {
        var pipe = new Pipe();
        var reader = new NbdRequestReader(pipe.Reader);
        var first = RawNbdClient.Request(1, RawNbdClient.CmdWrite, 42, 8192, 4096);

        await pipe.Writer.WriteAsync(first.AsMemory(0, 10));
        var pending = reader.ReadHeaderAsync(CancellationToken.None);
        Assert.False(pending.IsCompleted, "a partial header was taken for a whole one");
        await pipe.Writer.WriteAsync(first.AsMemory(10));
        var (status, request) = await pending;
        Assert.Equal(RequestReadStatus.Request, status);
        Assert.Equal(new NbdRequest(1, RawNbdClient.CmdWrite, 42, 8192, 4096), request);

        await pipe.Writer.WriteAsync(RawNbdClient.Request(0, RawNbdClient.CmdRead, 1, 0, 512, magic: 0xdeadbeef));
        (status, _) = await reader.ReadHeaderAsync(CancellationToken.None);
        Assert.Equal(RequestReadStatus.BadMagic, status);
        Assert.Equal(0xdeadbeefu, reader.LastBadMagic);

        await pipe.Writer.WriteAsync(first.AsMemory(0, 5));
        await pipe.Writer.CompleteAsync();
        (status, _) = await reader.ReadHeaderAsync(CancellationToken.None);
        Assert.Equal(RequestReadStatus.Truncated, status);
    }

    [Fact]
    public async Task A_write_counts_as_buffered_only_with_its_whole_payload()
    {
        var pipe = new Pipe();
        var reader = new NbdRequestReader(pipe.Reader);
        var write = RawNbdClient.Request(0, RawNbdClient.CmdWrite, 1, 0, 100, new byte[100]);
        await pipe.Writer.WriteAsync(write.AsMemory(0, 28 + 99));
        Assert.False(reader.HasBufferedRequest());
        await pipe.Writer.WriteAsync(write.AsMemory(28 + 99));
        Assert.True(reader.HasBufferedRequest());
    }
}
