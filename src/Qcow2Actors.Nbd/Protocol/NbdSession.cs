namespace Qcow2Actors.Nbd.Protocol;

/// <summary>What a finished handshake agreed on.</summary>
/// <param name="Export">The export the client selected.</param>
/// <param name="Structured">NBD_OPT_STRUCTURED_REPLY was negotiated.</param>
/// <param name="MetaContexts">
/// The metadata contexts SET_META_CONTEXT selected for <paramref name="Export"/>, in reply order; empty
/// when none was, and then BLOCK_STATUS is refused.
/// </param>
internal sealed record NbdSession(INbdExport Export, bool Structured, IReadOnlyList<NbdMetaContext> MetaContexts)
{
    /// <summary>At least one metadata context was selected, so BLOCK_STATUS is allowed.</summary>
    public bool MetaActive => MetaContexts.Count > 0;
}
