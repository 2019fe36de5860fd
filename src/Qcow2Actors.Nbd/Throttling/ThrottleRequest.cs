namespace Qcow2Actors.Nbd.Throttling;

/// <summary>
/// What a request asks a <see cref="ThrottleMember"/> for: its direction and its length in bytes
/// (the permit count of the acquisition is its number of operations, 1 for an NBD request).
/// </summary>
internal readonly record struct ThrottleRequest(ThrottleDirection Direction, long Bytes);
