using Akka.Actor;
using Akka.DistributedData;
using Akka.Event;

namespace Qcow2Actors.Host.Cluster.Forwarding;

/// <summary>
/// The cluster images every node exports: a replicated map TENANT/IMAGE -> virtual size (Akka.DistributedData, in
/// memory on every node). An owner adds its image when it starts serving it (also after a fail-over, so the map
/// comes back with the remembered entities after a full restart); every node's <see cref="Subscriber"/> adds the
/// proxy export of each image it learns of.
/// </summary>
internal static class ImageCatalog
{
    private static readonly LWWDictionaryKey<string, long> Key = new("q2a-cluster-images");

    /// <summary>Adds (or confirms) <paramref name="export"/> with its size; written to every reachable node at once.</summary>
    public static void Publish(ActorSystem system, string export, long size)
    {
        var cluster = Akka.Cluster.Cluster.Get(system);
        var replicator = DistributedData.Get(system).Replicator;
        replicator.Tell(Dsl.Update(Key, LWWDictionary<string, long>.Empty, new WriteAll(TimeSpan.FromSeconds(3)),
            map => map.TryGetValue(export, out var known) && known == size ? map : map.SetItem(cluster, export, size)));
    }

    /// <summary>Props of the actor that exports every image of the map on this node (through <paramref name="add"/>).</summary>
    public static Props Subscriber(Action<string, long> add) => Props.Create(() => new CatalogSubscriber(add));

    private sealed class CatalogSubscriber : ReceiveActor
    {
        private readonly HashSet<string> _known = new(StringComparer.Ordinal);

        public CatalogSubscriber(Action<string, long> add)
        {
            var log = Context.GetLogger();
            Receive<Changed>(changed =>
            {
                foreach (var (export, size) in changed.Get(Key))
                {
                    if (_known.Contains(export)) continue;
                    try
                    {
                        add(export, size);
                        _known.Add(export);
                    }
                    catch (Exception ex) when (ex is not OutOfMemoryException)
                    {
                        log.Warning("cluster image {0} not exported here: {1}", export, ex.Message);
                    }
                }
            });
            DistributedData.Get(Context.System).Replicator.Tell(Dsl.Subscribe(Key, Self));
        }
    }
}
