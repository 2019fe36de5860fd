namespace Qcow2Actors.Host.Api.Contracts;

/// <summary>POST .../resize: the new virtual size (growing only; NBD clients see it on reconnect).</summary>
public sealed record ResizeRequest
{
    /// <summary>New virtual size in bytes.</summary>
    public required long Size { get; init; }
}
