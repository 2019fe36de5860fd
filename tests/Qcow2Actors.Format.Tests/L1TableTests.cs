namespace Qcow2Actors.Format.Tests;

public class L1TableTests
{
    [Fact]
    public void Entries_round_trip_big_endian_and_a_trailing_partial_entry_is_ignored()
    {
        ulong[] entries = [0x8000000000050000, 0, 0x0000000000060000];
        var bytes = new byte[entries.Length * L1Entry.Size + 3];
        L1Table.Encode(entries, bytes);
        Assert.Equal(0x80, bytes[0]);
        Assert.Equal(0x05, bytes[5]);
        Assert.Equal(entries, L1Table.Decode(bytes));
    }

    [Fact]
    public void A_snapshot_copy_is_stored_without_COPIED_flags_and_keeps_the_offsets()
    {
        ulong[] entries = [L1Entry.Create(0x50000, copied: true).Raw, L1Entry.Create(0x70000, copied: false).Raw];
        var bytes = new byte[entries.Length * L1Entry.Size];
        L1Table.Encode(entries, bytes, clearCopied: true);
        var stored = L1Table.Decode(bytes);
        Assert.All(stored, w => Assert.False(new L1Entry(w).IsCopied));
        Assert.Equal([0x50000L, 0x70000L], stored.Select(w => new L1Entry(w).L2Offset));
    }
}
