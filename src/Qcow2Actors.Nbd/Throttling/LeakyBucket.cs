namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// One limit of a throttle group (say, write bytes per second) as a leaky bucket, the model QEMU's
/// throttling uses: admitted work fills <see cref="Level"/>, which drains at <see cref="Rate"/> units
/// per second; work waits while the level is above the bucket's size. With a burst rate the bucket
/// holds burst-rate x burst-length units, and a second level, drained at the burst rate, keeps a
/// burst from going faster than that rate.
/// </summary>
/// <remarks>Not thread-safe: the <see cref="ThrottleGroup"/> owning it holds its lock.</remarks>
internal struct LeakyBucket
{
    /// <summary>Steady units per second; zero: this limit is off.</summary>
    public double Rate;

    /// <summary>Units per second allowed during a burst; zero: no burst configured.</summary>
    public double BurstRate;

    /// <summary>Seconds a burst may last at <see cref="BurstRate"/>.</summary>
    public double BurstSeconds;

    /// <summary>Units admitted and not yet drained at <see cref="Rate"/>.</summary>
    public double Level;

    /// <summary>Units admitted and not yet drained at <see cref="BurstRate"/> (used only for bursts longer than a second).</summary>
    public double BurstLevel;

    public readonly bool Enabled => Rate > 0;

    private readonly bool TracksBurst => BurstRate > 0 && BurstSeconds > 1;

    /// <summary>Sets the limit; the levels start empty, as QEMU does when a group is reconfigured.</summary>
    public void Configure(long rate, long burstRate, double burstSeconds)
    {
        Rate = rate;
        BurstRate = rate > 0 ? burstRate : 0;
        BurstSeconds = burstSeconds;
        Level = 0;
        BurstLevel = 0;
    }

    /// <summary>Drains what <paramref name="seconds"/> of time took away.</summary>
    public void Drain(double seconds)
    {
        if (!Enabled) return;
        Level = Math.Max(Level - Rate * seconds, 0);
        if (TracksBurst) BurstLevel = Math.Max(BurstLevel - BurstRate * seconds, 0);
    }

    /// <summary>Charges admitted work.</summary>
    public void Add(double units)
    {
        if (!Enabled) return;
        Level += units;
        if (TracksBurst) BurstLevel += units;
    }

    /// <summary>Seconds until the next request may go, or zero when it may go now.</summary>
    public readonly double Wait()
    {
        if (!Enabled) return 0;
        // Without a burst rate a tenth of a second of the rate may pass at once: otherwise every
        // other request of a steady stream would wait, and throughput would suffer for nothing.
        double size = BurstRate > 0 ? BurstRate * BurstSeconds : Rate / 10;
        double over = Level - size;
        if (over > 0) return over / Rate;
        if (TracksBurst)
        {
            // Still within the burst allowance: keep the pace at the burst rate, a tenth of a second at a time.
            double burstOver = BurstLevel - BurstRate / 10;
            if (burstOver > 0) return burstOver / BurstRate;
        }
        return 0;
    }
}
