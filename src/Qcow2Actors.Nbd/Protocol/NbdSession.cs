namespace Qcow2Actors.Nbd.Protocol;

/// <summary>What a finished handshake agreed on.</summary>
/// <param name="Export">The export the client selected.</param>
/// <param name="Structured">NBD_OPT_STRUCTURED_REPLY was negotiated.</param>
/// <param name="MetaActive">base:allocation was selected for <paramref name="Export"/>, so BLOCK_STATUS is allowed.</param>
internal sealed record NbdSession(INbdExport Export, bool Structured, bool MetaActive);
