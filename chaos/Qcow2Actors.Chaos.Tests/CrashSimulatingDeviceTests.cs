using Qcow2Actors.Chaos.Devices;

namespace Qcow2Actors.Chaos.Tests;

public class CrashSimulatingDeviceTests
{
    private const int Sector = CrashSimulatingDevice.SectorSize;

    private static byte[] Filled(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    [Fact]
    public void Reads_see_unsynced_writes_before_any_crash()
    {
        using var device = new CrashSimulatingDevice(Filled(4096, 0xAA));
        device.Write(Filled(512, 0x11), 1024);

        var buffer = new byte[4096];
        Assert.Equal(4096, device.Read(buffer, 0));

        Assert.Equal(0x11, buffer[1024]);
        Assert.Equal(0xAA, buffer[0]);
        Assert.Equal(1, device.PendingOperationCount);
    }

    [Fact]
    public void LoseUnsynced_crash_returns_the_image_as_of_the_last_flush()
    {
        using var device = new CrashSimulatingDevice(Filled(2048, 0xAA));
        device.Write(Filled(512, 0x11), 0);
        device.Flush();
        device.Write(Filled(512, 0x22), 512);

        var crash = device.Crash(CrashMode.LoseUnsynced, new Random(1));

        Assert.Equal(Filled(512, 0x11), crash.Content[..512]);
        Assert.Equal(Filled(512, 0xAA), crash.Content[512..1024]);
    }

    [Fact]
    public void KeepAll_crash_returns_every_completed_write()
    {
        using var device = new CrashSimulatingDevice(Filled(2048, 0xAA));
        device.Write(Filled(512, 0x22), 512);

        var crash = device.Crash(CrashMode.KeepAll, new Random(1));

        Assert.Equal(device.CurrentContent(), crash.Content);
    }

    [Fact]
    public void Crash_leaves_the_device_itself_unchanged()
    {
        using var device = new CrashSimulatingDevice(Filled(1024, 0xAA));
        device.Write(Filled(512, 0x22), 0);

        _ = device.Crash(CrashMode.LoseUnsynced, new Random(1));

        Assert.Equal(0x22, device.CurrentContent()[0]);
        Assert.Equal(1, device.PendingOperationCount);
    }

    [Fact]
    public void KeepSubset_applies_the_surviving_writes_in_issue_order()
    {
        // w1 = A over sectors 0-1, w2 = B over sector 1. In-order subsets give exactly four images;
        // "A in sector 1 on top of B" is impossible because w2 was issued later.
        using var device = new CrashSimulatingDevice(Filled(2 * Sector, 0x00));
        device.Write(Filled(2 * Sector, 0xA1), 0);
        device.Write(Filled(Sector, 0xB2), Sector);
        var random = new Random(7);

        var seen = new HashSet<string>();
        for (var i = 0; i < 200; i++)
        {
            var c = device.Crash(CrashMode.KeepSubset, random).Content;
            seen.Add($"{c[0]:x2}{c[Sector]:x2}");
        }

        Assert.Equal(new HashSet<string> { "0000", "a1a1", "00b2", "a1b2" }, seen);
    }

    [Fact]
    public void KeepPrefix_never_keeps_a_later_write_without_the_earlier_ones()
    {
        using var device = new CrashSimulatingDevice(Filled(2 * Sector, 0x00));
        device.Write(Filled(Sector, 0x01), 0);
        device.Write(Filled(Sector, 0x02), Sector);
        var random = new Random(3);

        for (var i = 0; i < 100; i++)
        {
            var c = device.Crash(CrashMode.KeepPrefix, random).Content;
            Assert.False(c[0] == 0 && c[Sector] == 2, "second write survived without the first");
        }
    }

    [Fact]
    public void TearLast_mixes_whole_old_and_new_sectors_of_one_write()
    {
        using var device = new CrashSimulatingDevice(Filled(8 * Sector, 0xEE));
        device.Write(Filled(8 * Sector, 0x77), 0);

        var crash = device.Crash(CrashMode.TearLast, new Random(11));

        var sectors = Enumerable.Range(0, 8).Select(s => crash.Content.AsSpan(s * Sector, Sector).ToArray()).ToList();
        Assert.All(sectors, s => Assert.True(s.All(b => b == 0x77) || s.All(b => b == 0xEE), "a sector was split"));
        Assert.Contains(sectors, s => s[0] == 0x77);
        Assert.Contains(sectors, s => s[0] == 0xEE);
        Assert.Contains("torn", crash.Description, StringComparison.Ordinal);
    }

    [Fact]
    public void TearAny_gives_each_sector_one_of_the_versions_it_had_since_the_flush()
    {
        using var device = new CrashSimulatingDevice(Filled(4 * Sector, 0x00));
        device.Write(Filled(4 * Sector, 0x01), 0);
        device.Write(Filled(2 * Sector, 0x02), Sector);
        device.Write(Filled(Sector, 0x03), 2 * Sector);
        var random = new Random(5);
        var legal = new[] { new byte[] { 0, 1 }, new byte[] { 0, 1, 2 }, new byte[] { 0, 1, 2, 3 }, new byte[] { 0, 1 } };

        var seenMixed = false;
        for (var i = 0; i < 100; i++)
        {
            var c = device.Crash(CrashMode.TearAny, random).Content;
            for (var s = 0; s < 4; s++)
            {
                var sector = c.AsSpan(s * Sector, Sector);
                Assert.True(sector.IndexOfAnyExcept(sector[0]) < 0, "a sector was split");
                Assert.Contains(sector[0], legal[s]);
            }
            seenMixed |= c[0] == 0 && c[2 * Sector] == 3;
        }
        Assert.True(seenMixed, "per-sector tearing never let a later sector survive while an earlier was lost");
    }

    [Fact]
    public void A_length_change_is_lost_or_kept_like_a_write()
    {
        using var device = new CrashSimulatingDevice(Filled(4096, 0xAA));
        device.SetLength(8192);
        device.Write(Filled(512, 0x33), 7680);

        Assert.Equal(4096, device.Crash(CrashMode.LoseUnsynced, new Random(1)).Content.Length);
        Assert.Equal(8192, device.Crash(CrashMode.KeepAll, new Random(1)).Content.Length);
    }

    [Fact]
    public void An_unsynced_shrink_lost_in_a_crash_brings_the_old_tail_back()
    {
        using var device = new CrashSimulatingDevice(Filled(4096, 0xAA));
        device.SetLength(1024);

        var crash = device.Crash(CrashMode.LoseUnsynced, new Random(1));

        Assert.Equal(Filled(4096, 0xAA), crash.Content);
        Assert.Equal(1024, device.Length);
    }

    [Fact]
    public void Same_seed_gives_the_same_crash_state()
    {
        using var device = new CrashSimulatingDevice(Filled(16 * Sector, 0));
        for (byte i = 1; i <= 8; i++) device.Write(Filled(2 * Sector, i), (i - 1) * 2 * Sector);

        var a = device.Crash(CrashMode.TearAny, new Random(42));
        var b = device.Crash(CrashMode.TearAny, new Random(42));

        Assert.Equal(a.Content, b.Content);
        Assert.Equal(a.Description, b.Description);
    }

    [Fact]
    public void EnumerateCrashStates_starts_with_the_flushed_and_the_complete_image_and_never_repeats()
    {
        using var device = new CrashSimulatingDevice(Filled(16 * Sector, 0));
        device.Flush();
        for (byte i = 1; i <= 6; i++) device.Write(Filled(3 * Sector, i), (i - 1) * 2 * Sector);

        var states = device.EnumerateCrashStates(40, new Random(9)).ToList();

        Assert.Equal(device.DurableContent(), states[0].Content);
        Assert.Equal(device.CurrentContent(), states[1].Content);
        Assert.Equal(40, states.Count);
        Assert.Equal(states.Count, states.Select(s => Convert.ToHexString(s.Content)).Distinct().Count());
    }

    [Fact]
    public void EnumerateCrashStates_with_nothing_pending_yields_only_the_flushed_image()
    {
        using var device = new CrashSimulatingDevice(Filled(1024, 0x5A));
        device.Write(Filled(512, 1), 0);
        device.Flush();

        var states = device.EnumerateCrashStates(10, new Random(1)).ToList();

        var only = Assert.Single(states);
        Assert.Equal(device.DurableContent(), only.Content);
    }

    [Fact]
    public void PowerCutAfter_lets_n_operations_through_then_fails_everything_with_EIO()
    {
        using var device = new CrashSimulatingDevice(Filled(4096, 0));
        device.PowerCutAfter(2);
        device.Write(Filled(512, 1), 0);
        device.Flush();

        var failed = Assert.Throws<ChaosIOException>(() => device.Write(Filled(512, 2), 512));
        Assert.Equal(Errno.EIO, failed.HResult);
        Assert.True(device.IsPoweredOff);
        Assert.Throws<ChaosIOException>(() => device.Read(new byte[1], 0));
        Assert.Throws<ChaosIOException>(device.Flush);
        Assert.Equal(0, device.PendingOperationCount);
        Assert.Equal(1, device.Crash(CrashMode.KeepAll, new Random(1)).Content[0]);
    }

    [Fact]
    public void LoseUnsyncedWrites_keeps_them_readable_but_never_durable()
    {
        using var device = new CrashSimulatingDevice(Filled(1024, 0));
        device.Write(Filled(512, 9), 0);
        device.LoseUnsyncedWrites();
        device.Flush();

        Assert.Equal(9, device.CurrentContent()[0]);
        Assert.Equal(0, device.Crash(CrashMode.KeepAll, new Random(1)).Content[0]);
    }

    [Fact]
    public void Reboot_continues_from_the_crash_content_as_the_flushed_image()
    {
        using var device = new CrashSimulatingDevice(Filled(1024, 0));
        device.Write(Filled(512, 4), 0);
        var crash = device.Crash(CrashMode.KeepAll, new Random(1));

        using var rebooted = crash.Reboot();
        rebooted.Write(Filled(512, 5), 512);

        Assert.Equal(crash.Content, rebooted.Crash(CrashMode.LoseUnsynced, new Random(1)).Content);
    }

    [Fact]
    public void WriteTo_materialises_a_crash_state_as_a_file()
    {
        using var device = new CrashSimulatingDevice(Filled(1024, 3));
        var path = Path.Combine(Path.GetTempPath(), $"q2a-chaos-{Guid.NewGuid():N}.raw");
        try
        {
            device.Crash(CrashMode.LoseUnsynced, new Random(1)).WriteTo(path);
            Assert.Equal(Filled(1024, 3), File.ReadAllBytes(path));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
