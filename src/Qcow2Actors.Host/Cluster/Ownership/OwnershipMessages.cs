namespace Qcow2Actors.Host.Cluster.Ownership;

/// <summary>Messages between nodes' <see cref="NodeAgent"/>s; serialized by <see cref="OwnershipSerializer"/>.</summary>
internal interface IOwnershipMessage;

/// <summary>Asks a node which cluster images it has open and where their exports are.</summary>
internal sealed record NodeReportRequest : IOwnershipMessage;

/// <summary>A node's answer: each image it has open (TENANT/IMAGE) and the NBD URI of its export there.</summary>
internal sealed record NodeReport(IReadOnlyList<ServedImage> Images) : IOwnershipMessage;

/// <summary>One image a node has open and serves.</summary>
internal sealed record ServedImage(string Id, string Nbd);

/// <summary>Asks a node to stop serving TENANT/IMAGE if its entity runs there (passivation: sharding forgets it).</summary>
internal sealed record UnserveRequest(string EntityId) : IOwnershipMessage;

/// <summary>
/// The answer to <see cref="UnserveRequest"/>: <paramref name="Found"/> when the entity ran on that node, which has then
/// closed the image and stopped it; <paramref name="Error"/> when it ran there but did not stop in time.
/// </summary>
internal sealed record UnserveReply(string EntityId, bool Found, string? Error) : IOwnershipMessage;
