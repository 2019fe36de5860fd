namespace Qcow2Actors.CrashLab;

/// <summary>Fixed facts at the start of a recording: which image was recorded, the internal snapshot holding its
/// contents when recording began (the base every crash state is built on), its virtual size and when it started.</summary>
/// <param name="ImagePath">Path of the recorded qcow2 image (the base snapshot lives in it).</param>
/// <param name="BaseSnapshot">Name of the internal snapshot taken before the first recorded request.</param>
/// <param name="VirtualSize">Guest-visible size of the image in bytes.</param>
/// <param name="Started">When recording started.</param>
public sealed record CrashLogHeader(string ImagePath, string BaseSnapshot, long VirtualSize, DateTimeOffset Started);
