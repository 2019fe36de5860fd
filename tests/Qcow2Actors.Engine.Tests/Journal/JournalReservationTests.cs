using Qcow2Actors.Engine.Device;
using Qcow2Actors.Engine.Journal;
using Qcow2Actors.Engine.Tests.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Journal;

public sealed class JournalReservationTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Headroom_is_reserved_ahead_of_the_append_position_and_shrinks_as_records_are_promised()
    {
        var reservation = new JournalReservation();
        using var file = new JournalFile(_dir.File("a.journal"), 1 << 20, reservation: reservation);
        file.EnsureLoaded();
        Assert.False(reservation.Unchecked);
        reservation.EnsureHeadroom(freeingOnly: false);
        Assert.True(reservation.Headroom >= JournalReservation.Margin + JournalReservation.Chunk);
        Assert.Equal(0, new FileInfo(file.Path).Length); // reserved past the end: the length stays

        reservation.AddPending(JournalReservation.Chunk);
        long before = reservation.Headroom;
        file.Append([[Event(1, 200)]]);
        reservation.AddPending(-JournalReservation.Chunk);
        Assert.True(reservation.Headroom < before + JournalReservation.Chunk, "the appended bytes came out of the reserved region");
        Assert.True(HostFile.AllocatedBytes(file.Path) >= JournalReservation.Chunk, "the region is allocated on the host");
    }

    [Fact]
    public void A_reservation_that_finds_the_disk_full_fails_with_ENOSPC_and_the_journal_stays_usable()
    {
        var full = false;
        var reservation = new JournalReservation();
        using var file = new JournalFile(_dir.File("b.journal"), 1 << 20,
            openExisting: p => new FullDiskDevice(FileBlockDevice.Open(p, true), () => full),
            createNew: p => new FullDiskDevice(FileBlockDevice.Create(p, true), () => full),
            reservation: reservation);
        file.EnsureLoaded();
        reservation.EnsureHeadroom(freeingOnly: false);
        reservation.AddPending(reservation.Headroom - JournalReservation.FreeingMinimum);

        full = true;
        var error = Assert.Throws<Qcow2NoSpaceException>(() => reservation.EnsureHeadroom(freeingOnly: false));
        Assert.Equal(28, error.HResult);
        // Freeing requests may still use the last reserved bytes.
        reservation.EnsureHeadroom(freeingOnly: true);
        file.Append([[Event(1, 100)]]);

        full = false;
        reservation.EnsureHeadroom(freeingOnly: false);
        Assert.True(reservation.Headroom >= JournalReservation.Margin);
        file.Append([[Event(2, 100)]]);
        Assert.Equal(2, file.HighestSequenceNr);
    }

    private static StoredEvent Event(long seq, int bytes) => new(seq, 1000 + seq, 4, "", "", "writer", new byte[bytes]);

    /// <summary>Refuses every reservation while <paramref name="full"/> says the disk is full.</summary>
    private sealed class FullDiskDevice(IBlockDevice inner, Func<bool> full) : DelegatingDevice(inner)
    {
        public override bool ReserveSpace(long offset, long length) =>
            full() ? throw new Qcow2NoSpaceException("test disk is full") : base.ReserveSpace(offset, length);
    }
}
