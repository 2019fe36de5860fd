namespace Qcow2Actors.Nbd.Client;

/// <summary>The connection to the server ended (EOF, reset, protocol violation, disposal); the message says which and names the server and export.</summary>
internal sealed class NbdConnectionClosedException(string message, Exception? inner = null) : IOException(message, inner);
