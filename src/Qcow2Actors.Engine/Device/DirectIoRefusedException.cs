namespace Qcow2Actors.Engine.Device;

/// <summary>
/// The filesystem refuses O_DIRECT (<c>cache=none</c>). Not transient: retrying the open cannot
/// help, so <see cref="ResilientBlockDevice.IsTransient"/> lets it through at once.
/// </summary>
internal sealed class DirectIoRefusedException(string message) : IOException(message, HostFileCalls.Einval);
