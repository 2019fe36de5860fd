using Qcow2Actors.Chaos.Devices;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Chaos.Tests;

/// <summary>
/// A tracked persistent bitmap under power cuts: writes (new clusters and overwrites in place),
/// write-zeroes and a discard, a flush midway, more requests never flushed, then the power goes.
/// In every crash state (unsynced image writes lost, kept, kept in part, torn) recovery leaves the
/// bitmap consistent (not in use) and every granule whose content differs from before the first
/// write is set in it, whether its write was acknowledged, flushed, or neither.
/// </summary>
public sealed class BitmapCrashTests
{
    private const int KiB = 1024, MiB = 1024 * KiB;
    private const long DiskSize = 4 * MiB;
    private const int Granule = 64 * KiB;
    private const string Hocon = "qcow2actors.engine.checkpoint-interval = 0s";

    private static byte[] Random(Random rng, int length)
    {
        var data = new byte[length];
        rng.NextBytes(data);
        return data;
    }

    [QemuFact]
    public async Task After_a_power_cut_the_recovered_bitmap_is_consistent_and_covers_every_granule_whose_data_changed()
    {
        using var dir = new TempDir();
        var path = dir.File("bitmap.qcow2");
        var rng = new Random(2026);
        var before = new byte[DiskSize];
        rng.NextBytes(before.AsSpan(0, 1 * MiB));
        await using (var host = ImageHost.Create(Hocon, "bitmap-setup"))
        await using (var image = await host.CreateAsync(path, new Qcow2CreateOptions { Size = DiskSize }))
        {
            await image.WriteAsync(0, before.AsMemory(0, 1 * MiB));
            await image.AddBitmapAsync("b", Granule);
        }

        await using var engine = await EngineOnSimulatedDisk.OpenAsync(path, Hocon);
        var written = engine.Image;
        for (int i = 0; i < 8; i++)
            await written.WriteAsync(rng.NextInt64(0, DiskSize - 8 * KiB), Random(rng, rng.Next(1, 8 * KiB)));
        await written.WriteZeroesAsync(2 * MiB + 3 * Granule, Granule);
        await written.FlushAsync();
        for (int i = 0; i < 8; i++)
            await written.WriteAsync(rng.NextInt64(0, DiskSize - 8 * KiB), Random(rng, rng.Next(1, 8 * KiB)));
        await written.DiscardAsync(5 * Granule, 2 * Granule);
        await written.WriteZeroesAsync(8 * Granule + 512, 1024);
        var journal = await engine.CrashAsync();
        Assert.NotNull(journal);

        int n = 0, changed = 0;
        foreach (var mode in new[] { CrashMode.LoseUnsynced, CrashMode.KeepAll, CrashMode.KeepSubset, CrashMode.TearAny })
        {
            for (int k = 0; k < 2; k++)
            {
                var state = dir.File($"state{n++}.qcow2");
                var crash = engine.Disk.Crash(mode, rng);
                crash.WriteTo(state);
                await File.WriteAllBytesAsync(state + ".journal", journal);
                changed += await AssertBitmapCoversChangesAsync(state, before, crash.Description);
            }
        }
        // The states that kept writes changed granules: the check above had something to check.
        Assert.True(changed > 0, "no crash state kept a change");
    }

    /// <summary>Recovers <paramref name="path"/> and checks its bitmap; returns how many granules changed.</summary>
    private static async Task<int> AssertBitmapCoversChangesAsync(string path, byte[] before, string state)
    {
        int changed = 0;
        await using (var host = ImageHost.Create(Hocon, "bitmap-recovery"))
        await using (var image = await host.OpenAsync(path, new Qcow2OpenOptions { ReadOnly = false }))
        {
            var b = Assert.Single(image.Bitmaps);
            Assert.False(b.InUse || b.Inconsistent, $"{state}: {b}");
            var now = new byte[DiskSize];
            await image.ReadAsync(0, now);
            var dirty = new HashSet<long>();
            await foreach (var e in image.GetBitmapExtentsAsync("b", 0, DiskSize))
                if (e.Dirty)
                    for (long g = e.Start; g < e.Start + e.Length; g += Granule) dirty.Add(g / Granule);
            for (long g = 0; g < DiskSize / Granule; g++)
            {
                if (before.AsSpan((int)(g * Granule), Granule).SequenceEqual(now.AsSpan((int)(g * Granule), Granule))) continue;
                changed++;
                Assert.True(dirty.Contains(g), $"{state}: granule {g} changed but its bit is clear");
            }
        }
        QemuTools.AssertCheckClean(path);
        return changed;
    }
}
