namespace Qcow2Actors.Nbd;

/// <summary>Whether a listener offers TLS (NBD_OPT_STARTTLS), and whether it insists on it.</summary>
public enum NbdTlsMode
{
    /// <summary>No TLS (the protocol's NOTLS mode): NBD_OPT_STARTTLS is answered as unsupported.</summary>
    Off,

    /// <summary>TLS at the client's choice: plain-text clients are served, STARTTLS is accepted (SELECTIVETLS with no TLS-only export).</summary>
    Optional,

    /// <summary>
    /// TLS before anything else (FORCEDTLS): every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT is answered
    /// NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME before TLS ends the connection.
    /// </summary>
    Required,
}
