using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Text;
using Microsoft.Extensions.Logging;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;

namespace Qcow2Actors.Nbd.Protocol;

/// <summary>
/// The fixed-newstyle handshake and option haggling, up to the client choosing an export
/// (NBD_OPT_GO or NBD_OPT_EXPORT_NAME), under <see cref="NbdServerOptions.HandshakeTimeout"/>
/// timed by <see cref="NbdServerOptions.TimeProvider"/>. With TLS offered, NBD_OPT_STARTTLS moves the
/// connection onto TLS (and, with <see cref="NbdTlsMode.Required"/>, nothing else is answered before it).
/// With <see cref="NbdServerOptions.TenantOf"/>, the client sees only its tenant's exports (and shared
/// ones); any other answers exactly as a name nobody serves.
/// </summary>
// admit: asked before a client enters an export (GO, EXPORT_NAME): null lets it in, else the one-line reason it
// may not (the bound per tenant); GO answers that with NBD_REP_ERR_POLICY, EXPORT_NAME drops the client.
internal sealed class NbdHandshake(NbdServer server, NbdConnection connection, PipeReader reader, ILogger log, string peer, Func<INbdExport, string?>? admit = null)
{
    /// <summary>Option data beyond this is drained and refused rather than buffered.</summary>
    private const int MaxOptionLength = 64 * 1024;

    /// <summary>Advertised minimum block size: any byte alignment works.</summary>
    private const uint MinimumBlockSize = 1;

    /// <summary>Advertised preferred block size: a page, below which requests cost read-modify-write.</summary>
    private const uint PreferredBlockSize = 4096;

    private NbdServerOptions Options => server.Options;
    private bool _noZeroes;
    private bool _structured;
    private INbdExport? _metaExport; // export the last successful SET_META_CONTEXT was for
    private IReadOnlyList<NbdMetaContext> _metaContexts = []; // what it selected there
    private CancellationToken _cancel;
    private bool _tls;
    private string? _tenant;

    private Stream Output => connection.Output;

    /// <summary>
    /// Nothing but STARTTLS before TLS: in <see cref="NbdTlsMode.Required"/>, and with an allow-list in any mode that offers TLS
    /// (a plain-text client has no certificate to check, so an optional listener must not let it past the list either).
    /// </summary>
    private bool TlsRequired => Options.TlsMode == NbdTlsMode.Required || (Options.TlsMode != NbdTlsMode.Off && Options.Authorize is not null);

    /// <summary>
    /// Negotiates; null when the client left, aborted, misbehaved or ran out of time. A client that
    /// has not chosen an export within the handshake timeout is dropped, so idle connections cannot
    /// pile up to the descriptor limit.
    /// </summary>
    public async Task<NbdSession?> RunAsync(CancellationToken stopping)
    {
        var timeout = Options.HandshakeTimeout;
        using var deadline = timeout > TimeSpan.Zero
            ? new CancellationTokenSource(timeout, Options.TimeProvider)
            : new CancellationTokenSource();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, deadline.Token);
        _cancel = linked.Token;
        try
        {
            return await NegotiateAsync();
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !stopping.IsCancellationRequested)
        {
            server.ReportHandshakeTimeout(peer);
            return null;
        }
    }

    private async Task<NbdSession?> NegotiateAsync()
    {
        var hello = new byte[ServerHello.Size];
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(ServerHello.PasswdOffset), InitPasswd);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(ServerHello.OptMagicOffset), OptMagic);
        BinaryPrimitives.WriteUInt16BigEndian(hello.AsSpan(ServerHello.FlagsOffset), FlagFixedNewstyle | FlagNoZeroes);
        await Output.WriteAsync(hello, _cancel);

        var flagsField = new byte[ClientFlagsField.Size];
        if (!await PipeReading.ReadExactAsync(reader, flagsField, allowEof: true, _cancel)) return null;
        var clientFlags = BinaryPrimitives.ReadUInt32BigEndian(flagsField);
        if ((clientFlags & ~(ClientFlagFixedNewstyle | ClientFlagNoZeroes)) != 0)
        {
            log.LogInformation("NBD {Peer}: unknown client flags 0x{Flags:x}; disconnecting", peer, clientFlags);
            return null;
        }
        _noZeroes = (clientFlags & ClientFlagNoZeroes) != 0;
        // A plain-text client is who its address says; STARTTLS replaces this with the certificate's identity.
        if (!Identify(new NbdClientIdentity { RemoteEndPoint = connection.RemoteEndPoint })) return null;

        var header = new byte[OptionHeader.Size];
        while (true)
        {
            if (!await PipeReading.ReadExactAsync(reader, header, allowEof: true, _cancel)) return null;
            if (BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(OptionHeader.MagicOffset)) != OptMagic)
            {
                log.LogInformation("NBD {Peer}: bad option magic; disconnecting", peer);
                return null;
            }
            var option = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(OptionHeader.OptionOffset));
            var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(OptionHeader.LengthOffset));
            if (length > MaxOptionLength)
            {
                await PipeReading.SkipAsync(reader, length, _cancel);
                await SendErrorAsync(option, RepErrTooBig, "option data too large");
                continue;
            }
            var data = new byte[length];
            await PipeReading.ReadExactAsync(reader, data, allowEof: false, _cancel);

            if (TlsRequired && !_tls && option is not (OptStartTls or OptAbort))
            {
                if (option == OptExportName)
                {
                    // EXPORT_NAME cannot carry an error: the protocol says to end the session.
                    log.LogInformation("NBD {Peer}: EXPORT_NAME before STARTTLS while TLS is required; disconnecting", peer);
                    Metrics.NbdMetrics.Refused(server.LocalEndPoint, "tls-required");
                    return null;
                }
                if (option is OptGo) Metrics.NbdMetrics.Refused(server.LocalEndPoint, "tls-required");
                await SendErrorAsync(option, RepErrTlsReqd, "TLS is required: send NBD_OPT_STARTTLS first");
                continue;
            }

            switch (option)
            {
                case OptExportName:
                    return await ExportNameAsync(data);
                case OptAbort:
                    await SendReplyAsync(option, RepAck, default);
                    return null;
                case OptList:
                    await ListAsync(data);
                    break;
                case OptInfo:
                case OptGo:
                    if (await InfoOrGoAsync(option, data) is { } session) return session;
                    break;
                case OptStructuredReply:
                    if (length != 0) await SendErrorAsync(option, RepErrInvalid, "STRUCTURED_REPLY takes no data");
                    else
                    {
                        _structured = true;
                        await SendReplyAsync(option, RepAck, default);
                    }
                    break;
                case OptListMetaContext:
                case OptSetMetaContext:
                    await MetaContextAsync(option, data);
                    break;
                case OptStartTls when Options.TlsMode != NbdTlsMode.Off:
                    if (_tls) await SendErrorAsync(option, RepErrInvalid, "TLS is already in use");
                    else if (length != 0) await SendErrorAsync(option, RepErrInvalid, "STARTTLS takes no data");
                    else if (!await StartTlsAsync()) return null;
                    break;
                default:
                    // STARTTLS lands here too when the listener runs without TLS (NOTLS mode).
                    await SendErrorAsync(option, RepErrUnsup, $"option {option} is not supported");
                    break;
            }
        }
    }

    /// <summary>
    /// Acknowledges STARTTLS and runs the TLS handshake; false when the connection must end (the handshake
    /// failed, or the verified client is not authorized), which is logged and counted as a refusal.
    /// </summary>
    private async Task<bool> StartTlsAsync()
    {
        NbdClientIdentity? identity;
        try
        {
            identity = await connection.StartTlsAsync(server.Tls!, OptionReply(OptStartTls, RepAck, default), _cancel);
        }
        catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException)
        {
            log.LogWarning("NBD {Peer}: TLS handshake failed ({Reason}); disconnecting", peer, ex.InnerException?.Message ?? ex.Message);
            Metrics.NbdMetrics.Refused(server.LocalEndPoint, "tls-handshake");
            return false;
        }
        if (identity is null)
        {
            log.LogInformation("NBD {Peer}: sent data behind STARTTLS before its reply; disconnecting", peer);
            return false;
        }
        _tls = true;
        // Whatever was negotiated in plain text does not carry over into the protected session.
        _structured = false;
        _metaExport = null;
        _metaContexts = [];
        if (Options.Authorize is { } authorize && !authorize(identity))
        {
            log.LogWarning("NBD {Peer}: client certificate '{Subject}' is not authorized (tls-authz); disconnecting", peer, identity.Subject);
            Metrics.NbdMetrics.Refused(server.LocalEndPoint, "tls-authz");
            return false;
        }
        log.LogDebug("NBD {Peer}: TLS established for '{Subject}'", peer, identity.Subject);
        return Identify(identity);
    }

    /// <summary>Resolves the client's tenant from <paramref name="identity"/> (when the server isolates tenants); false to disconnect.</summary>
    private bool Identify(NbdClientIdentity identity)
    {
        if (Options.TenantOf is not { } tenantOf) return true;
        _tenant = tenantOf(identity);
        connection.Tenant = _tenant;
        return true;
    }

    /// <summary>True when this client may know <paramref name="export"/> exists: no isolation, a shared export, or its own tenant's.</summary>
    private bool Visible(INbdExport export) =>
        Options.TenantOf is null || export.Tenant is null || string.Equals(export.Tenant, _tenant, StringComparison.Ordinal);

    /// <summary>The export named <paramref name="name"/> as this client may see it (the empty name: the first it may see); null as for a missing one.</summary>
    private INbdExport? FindExport(string name)
    {
        if (Options.TenantOf is null) return server.FindExport(name);
        if (name.Length == 0) return server.Exports.FirstOrDefault(Visible);
        return server.FindExport(name) is { } export && Visible(export) ? export : null;
    }

    private NbdSession Enter(INbdExport export)
    {
        log.LogDebug("NBD {Peer}: serving '{Export}' (structured={Structured})", peer, export.Name, _structured);
        // Contexts selected for another export do not carry over to this one (as qemu-nbd).
        var contexts = _structured && ReferenceEquals(_metaExport, export) ? _metaContexts : [];
        return new NbdSession(export, _structured, contexts);
    }

    private async Task<NbdSession?> ExportNameAsync(byte[] data)
    {
        var export = data.Length <= MaxStringLength ? FindExport(Encoding.UTF8.GetString(data)) : null;
        if (export is null)
        {
            // EXPORT_NAME cannot carry an error; the protocol says to drop the session.
            log.LogInformation("NBD {Peer}: EXPORT_NAME for unknown export; disconnecting", peer);
            Metrics.NbdMetrics.Refused(server.LocalEndPoint, "unknown-export");
            return null;
        }
        if (admit?.Invoke(export) is { } refusal)
        {
            log.LogInformation("NBD {Peer}: EXPORT_NAME '{Export}' refused: {Refusal}; disconnecting", peer, export.Name, refusal);
            return null;
        }
        var reply = new byte[_noZeroes ? ExportNameReply.ShortLength : ExportNameReply.FullLength];
        BinaryPrimitives.WriteUInt64BigEndian(reply.AsSpan(ExportNameReply.SizeOffset), (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(ExportNameReply.FlagsOffset), TransmissionFlags(export));
        await Output.WriteAsync(reply, _cancel);
        return Enter(export);
    }

    private async Task ListAsync(byte[] data)
    {
        if (data.Length != 0)
        {
            await SendErrorAsync(OptList, RepErrInvalid, "LIST takes no data");
            return;
        }
        foreach (var export in server.Exports)
        {
            if (!Visible(export)) continue;
            var name = Encoding.UTF8.GetBytes(export.Name);
            var description = Encoding.UTF8.GetBytes(export.Description ?? "");
            var payload = new byte[ServerListPayload.NameOffset + name.Length + description.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(ServerListPayload.NameLengthOffset), (uint)name.Length);
            name.CopyTo(payload, ServerListPayload.NameOffset);
            description.CopyTo(payload, ServerListPayload.NameOffset + name.Length);
            await SendReplyAsync(OptList, RepServer, payload);
        }
        await SendReplyAsync(OptList, RepAck, default);
    }

    private async Task<NbdSession?> InfoOrGoAsync(uint option, byte[] data)
    {
        if (data.Length < InfoRequestData.MinLength)
        {
            await SendErrorAsync(option, RepErrInvalid, "option data too short");
            return null;
        }
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(InfoRequestData.NameLengthOffset));
        if (nameLength > data.Length - InfoRequestData.MinLength || nameLength > MaxStringLength)
        {
            await SendErrorAsync(option, RepErrInvalid, "export name length out of range");
            return null;
        }
        var name = Encoding.UTF8.GetString(data, InfoRequestData.NameOffset, (int)nameLength);
        var p = InfoRequestData.NameOffset + (int)nameLength;
        var count = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(p));
        p += InfoRequestData.CountSize;
        if (data.Length != p + InfoRequestData.ItemSize * count)
        {
            await SendErrorAsync(option, RepErrInvalid, "information request list does not match the option length");
            return null;
        }
        bool wantName = false, wantDescription = false;
        for (var i = 0; i < count; i++)
        {
            var type = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(p + InfoRequestData.ItemSize * i));
            wantName |= type == InfoName;
            wantDescription |= type == InfoDescription;
        }

        var export = FindExport(name);
        if (export is null)
        {
            if (option == OptGo) Metrics.NbdMetrics.Refused(server.LocalEndPoint, "unknown-export");
            await SendErrorAsync(option, RepErrUnknown, $"no export named '{name}'");
            return null;
        }
        if (option == OptGo && admit?.Invoke(export) is { } refusal)
        {
            await SendErrorAsync(option, RepErrPolicy, refusal);
            return null;
        }

        var info = new byte[InfoExportPayload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(InfoExportPayload.TypeOffset), InfoExport);
        BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(InfoExportPayload.SizeOffset), (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(InfoExportPayload.FlagsOffset), TransmissionFlags(export));
        await SendReplyAsync(option, RepInfo, info);

        if (wantName) await SendInfoStringAsync(option, InfoName, export.Name);
        if (wantDescription && export.Description is { } description)
            await SendInfoStringAsync(option, InfoDescription, description);

        // Sent unasked too: clients ignore info they did not request, and ours are the defaults anyway.
        var sizes = new byte[InfoBlockSizePayload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(sizes.AsSpan(InfoBlockSizePayload.TypeOffset), InfoBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(InfoBlockSizePayload.MinimumOffset), MinimumBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(InfoBlockSizePayload.PreferredOffset), PreferredBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(InfoBlockSizePayload.MaximumOffset), (uint)Options.MaxBlockSize);
        await SendReplyAsync(option, RepInfo, sizes);

        await SendReplyAsync(option, RepAck, default);
        return option == OptGo ? Enter(export) : null;
    }

    private async Task SendInfoStringAsync(uint option, ushort type, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var payload = new byte[InfoStringPayload.TextOffset + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(InfoStringPayload.TypeOffset), type);
        bytes.CopyTo(payload, InfoStringPayload.TextOffset);
        await SendReplyAsync(option, RepInfo, payload);
    }

    private async Task MetaContextAsync(uint option, byte[] data)
    {
        var set = option == OptSetMetaContext;
        if (set)
        {
            // A SET replaces the selection even when it fails.
            _metaExport = null;
            _metaContexts = [];
        }
        if (!_structured)
        {
            await SendErrorAsync(option, RepErrInvalid, "negotiate structured replies first");
            return;
        }
        if (!TryParseMetaQuery(data, out var name, out var queries))
        {
            await SendErrorAsync(option, RepErrInvalid, "malformed metadata context request");
            return;
        }
        var export = FindExport(name);
        if (export is null)
        {
            await SendErrorAsync(option, RepErrUnknown, $"no export named '{name}'");
            return;
        }

        // base:allocation, and qemu:allocation-depth and qemu:dirty-bitmap:NAME where the export offers
        // them; unknown namespaces and leaves are skipped, as the protocol requires.
        var selected = NbdMetaSelection.Select(export, queries, list: !set);
        foreach (var context in selected)
        {
            var nameBytes = Encoding.UTF8.GetBytes(context.Name);
            var payload = new byte[MetaContextPayload.NameOffset + nameBytes.Length];
            // LIST names contexts without handing out ids: the id field is 0 there.
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(MetaContextPayload.IdOffset), set ? context.Id : 0);
            nameBytes.CopyTo(payload, MetaContextPayload.NameOffset);
            await SendReplyAsync(option, RepMetaContext, payload);
        }
        if (set && selected.Count > 0)
        {
            _metaExport = export;
            _metaContexts = selected;
        }
        await SendReplyAsync(option, RepAck, default);
    }

    private static bool TryParseMetaQuery(byte[] data, out string exportName, out List<string> queries)
    {
        exportName = "";
        queries = [];
        if (data.Length < MetaContextRequestData.MinLength) return false;
        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(MetaContextRequestData.NameLengthOffset));
        if (nameLength > data.Length - MetaContextRequestData.MinLength || nameLength > MaxStringLength) return false;
        exportName = Encoding.UTF8.GetString(data, MetaContextRequestData.NameOffset, (int)nameLength);
        var p = MetaContextRequestData.NameOffset + (int)nameLength;
        var count = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(p));
        p += MetaContextRequestData.CountSize;
        for (uint i = 0; i < count; i++)
        {
            if (data.Length - p < MetaContextRequestData.QueryLengthSize) return false;
            var queryLength = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(p));
            p += MetaContextRequestData.QueryLengthSize;
            if (queryLength > data.Length - p || queryLength > MaxStringLength) return false;
            queries.Add(Encoding.UTF8.GetString(data, p, (int)queryLength));
            p += (int)queryLength;
        }
        return p == data.Length;
    }

    private ushort TransmissionFlags(INbdExport export)
    {
        var flags = (ushort)(FlagHasFlags | FlagSendFlush | FlagSendFua | FlagCanMultiConn);
        flags |= export.IsReadOnly
            ? FlagReadOnly
            : (ushort)(FlagSendTrim | FlagSendWriteZeroes | FlagSendFastZero);
        // Every read reply is a single content chunk, so "don't fragment" costs nothing.
        if (_structured) flags |= FlagSendDf;
        return flags;
    }

    private async Task SendReplyAsync(uint option, uint type, ReadOnlyMemory<byte> data) =>
        await Output.WriteAsync(OptionReply(option, type, data), _cancel);

    private static byte[] OptionReply(uint option, uint type, ReadOnlyMemory<byte> data)
    {
        var buffer = new byte[OptionReplyHeader.Size + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(OptionReplyHeader.MagicOffset), OptReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(OptionReplyHeader.OptionOffset), option);
        BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(OptionReplyHeader.TypeOffset), type);
        BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(OptionReplyHeader.LengthOffset), (uint)data.Length);
        data.Span.CopyTo(buffer.AsSpan(OptionReplyHeader.Size));
        return buffer;
    }

    private Task SendErrorAsync(uint option, uint type, string message) =>
        SendReplyAsync(option, type, Encoding.UTF8.GetBytes(message));
}
