using System.Reflection;
using Akka.Actor;
using Microsoft.Extensions.Logging;

namespace Qcow2Actors.Host.Cluster;

/// <summary>
/// Makes Akka's split-brain resolver look at its stable-after deadline more often than once a second.
/// </summary>
/// <remarks>
/// Akka.NET's resolver decides on a fixed 1 s tick (not configurable): a downing decision comes 0-1 s after its
/// <c>stable-after</c> deadline, the largest and most variable share of a fail-over (a node SIGKILLed was downed
/// 0.75-1.75 s after it was seen unreachable). Sending the resolver its own tick message every
/// <c>sbr-tick-interval</c> changes only when it looks: its decision (keep-majority), its stable-after and
/// down-all-when-unstable rules are Akka's, and an extra tick before the deadline does nothing. The tick type is
/// internal to Akka.Cluster, so it is looked up by name; if a later Akka renames it, this logs one line and the
/// resolver keeps its 1 s tick.
/// </remarks>
internal sealed class SbrTicker : ReceiveActor, IWithTimers
{
    /// <summary>Where Akka.Cluster runs the downing provider's actor (the resolver) on every node.</summary>
    public const string ResolverPath = "/system/cluster/core/daemon/downingProvider";

    private sealed class Send { public static readonly Send Instance = new(); }

    public ITimerScheduler Timers { get; set; } = null!;

    public SbrTicker(object tick, TimeSpan interval)
    {
        var resolver = Context.ActorSelection(ResolverPath);
        Receive<Send>(_ => resolver.Tell(tick, ActorRefs.NoSender));
        Timers.StartPeriodicTimer("tick", Send.Instance, interval);
    }

    /// <summary>The resolver's tick message (internal to Akka.Cluster), or null if this Akka has none by that name.</summary>
    internal static object? ResolverTick() =>
        typeof(Akka.Cluster.Cluster).Assembly.GetType("Akka.Cluster.SBR.SplitBrainResolverBase+Tick")
            ?.GetField("Instance", BindingFlags.Public | BindingFlags.Static)?.GetValue(null);
}

/// <summary>Starts <see cref="SbrTicker"/> on a node.</summary>
internal static class SbrTickerSetup
{
    /// <summary>Starts the ticker (nothing when <paramref name="interval"/> is zero: the resolver's own 1 s tick).</summary>
    public static void Start(ActorSystem system, TimeSpan interval, ILogger log)
    {
        if (interval <= TimeSpan.Zero) return;
        if (SbrTicker.ResolverTick() is not { } tick)
        {
            log.LogWarning("cluster: sbr-tick-interval ignored: this Akka.Cluster has no split-brain resolver tick to send (the resolver decides on its own 1 s tick)");
            return;
        }
        system.ActorOf(Props.Create(() => new SbrTicker(tick, interval)), "q2a-sbr-ticker");
    }
}
