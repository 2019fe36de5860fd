using System.Runtime.InteropServices;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Tests.Protocol;

public sealed class WritePayloadTests
{
    private static long Address(Memory<byte> memory)
    {
        Assert.True(MemoryMarshal.TryGetArray<byte>(memory, out var segment));
        return Marshal.UnsafeAddrOfPinnedArrayElement(segment.Array!, segment.Offset);
    }

    [Theory]
    [InlineData(RequestBuffers.LargeThreshold + 1)]
    [InlineData(256 * 1024)]
    [InlineData(1 << 20)]
    [InlineData((1 << 20) + 512)]
    [InlineData(32 << 20)]
    public void A_large_payload_starts_on_a_4KiB_boundary_and_has_its_exact_length(int length)
    {
        for (int round = 0; round < 3; round++)
        {
            // Rented again after a return: the pooled array keeps its alignment.
            var payload = WritePayload.Rent(length);
            Assert.Equal(length, payload.Memory.Length);
            Assert.Equal(0, Address(payload.Memory) & 4095);
            payload.Memory.Span.Fill(0xa5);
            payload.Return();
        }
    }

    [Fact]
    public void Payloads_in_use_at_once_never_share_memory()
    {
        var held = Enumerable.Range(0, 12).Select(i => WritePayload.Rent(1 << 20)).ToList();
        for (int i = 0; i < held.Count; i++) held[i].Memory.Span.Fill((byte)i);
        for (int i = 0; i < held.Count; i++) Assert.True(held[i].Memory.Span.IndexOfAnyExcept((byte)i) < 0, $"payload {i} was overwritten");
        foreach (var p in held) p.Return();
    }

    [Fact]
    public void A_small_payload_has_its_exact_length()
    {
        var payload = WritePayload.Rent(4096);
        Assert.Equal(4096, payload.Memory.Length);
        payload.Return();
    }
}
