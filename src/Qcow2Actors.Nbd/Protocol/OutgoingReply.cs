namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// One whole reply ready to send: <see cref="Length"/> bytes of a buffer rented from the shared
/// array pool, which the sender returns once the bytes are out, then <see cref="Body"/>'s bytes when
/// the reply's data comes from a file. <see cref="Charge"/> is the in-flight byte budget its request
/// holds, given back (with its request slot) after the send. <see cref="Counted"/>: its request counted as running
/// in the connection's <see cref="ReplyHold"/> until this reply arrived.
/// </summary>
internal readonly record struct OutgoingReply(byte[] Buffer, int Length, long Charge, FileReplyBody? Body = null, bool Counted = false);
