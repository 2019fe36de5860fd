using System.Text.Json;
using Akka.Actor;
using Akka.Serialization;

namespace Qcow2Actors.Host.Cluster.Ownership;

/// <summary>
/// Akka serializer of the <see cref="IOwnershipMessage"/>s that travel between nodes: System.Text.Json with the
/// type's short name as the manifest (Akka's default JSON serializer would embed .NET type names).
/// </summary>
internal sealed class OwnershipSerializer(ExtendedActorSystem system) : SerializerWithStringManifest(system)
{
    /// <summary>This serializer's id (unique in the actor system; Akka reserves 0-40).</summary>
    public const int Id = 7102501;

    private static readonly Dictionary<string, Type> Types = new[]
    {
        typeof(NodeReportRequest), typeof(NodeReport), typeof(UnserveRequest), typeof(UnserveReply),
    }.ToDictionary(t => t.Name, StringComparer.Ordinal);

    public override int Identifier => Id;

    public override string Manifest(object o) =>
        o is IOwnershipMessage && Types.ContainsKey(o.GetType().Name) ? o.GetType().Name
            : throw new ArgumentException($"OwnershipSerializer cannot serialize {o.GetType()}", nameof(o));

    public override byte[] ToBinary(object obj) => JsonSerializer.SerializeToUtf8Bytes(obj, obj.GetType());

    public override object FromBinary(byte[] bytes, string manifest) =>
        Types.TryGetValue(manifest, out var type)
            ? JsonSerializer.Deserialize(bytes, type) ?? throw new System.Runtime.Serialization.SerializationException($"ownership message '{manifest}' is empty")
            : throw new System.Runtime.Serialization.SerializationException($"unknown ownership message '{manifest}'");
}
