using System.Buffers.Binary;
using System.Text;
using static Qcow2Actors.Nbd.Protocol.NbdProtocol;
using Qcow2Actors.Nbd.Protocol;

namespace Qcow2Actors.Nbd.Client;

/// <summary>
/// The client side of the fixed-newstyle handshake: greeting, STARTTLS (when asked), STRUCTURED_REPLY,
/// SET_META_CONTEXT, then GO (or EXPORT_NAME when the server does not know GO). Every refusal becomes one
/// line naming the server and the export.
/// </summary>
internal sealed class NbdClientHandshake(NbdClientOptions options, Stream transport)
{
    /// <summary>Option replies longer than this are a broken or hostile server, not data to buffer.</summary>
    private const int MaxOptionReplyLength = 1 << 20;

    private readonly string _endpoint = options.Endpoint;
    private Stream _stream = transport;

    private string Export => options.ExportName;

    public async Task<NbdNegotiation> RunAsync(CancellationToken ct)
    {
        var hello = new byte[ServerHello.Size];
        await ReadExactlyAsync(hello, "during the greeting", ct);
        if (BinaryPrimitives.ReadUInt64BigEndian(hello.AsSpan(ServerHello.PasswdOffset)) != InitPasswd)
            throw Fail("is not an NBD server (no NBDMAGIC in its greeting)");
        var magic = BinaryPrimitives.ReadUInt64BigEndian(hello.AsSpan(ServerHello.OptMagicOffset));
        if (magic == OldstyleMagic) throw Fail("speaks only the oldstyle NBD handshake, which this client does not support");
        if (magic != OptMagic) throw Fail("sent an unknown handshake magic");
        var serverFlags = BinaryPrimitives.ReadUInt16BigEndian(hello.AsSpan(ServerHello.FlagsOffset));
        if ((serverFlags & FlagFixedNewstyle) == 0) throw Fail("does not speak the fixed-newstyle NBD handshake");
        var noZeroes = (serverFlags & FlagNoZeroes) != 0;
        var clientFlags = new byte[ClientFlagsField.Size];
        BinaryPrimitives.WriteUInt32BigEndian(clientFlags, ClientFlagFixedNewstyle | (noZeroes ? ClientFlagNoZeroes : 0));
        await _stream.WriteAsync(clientFlags, ct);

        if (options.Tls is { } tls) await StartTlsAsync(tls, ct);

        var structured = await StructuredReplyAsync(ct);
        var contexts = structured && options.MetaContexts.Count > 0
            ? await SetMetaContextAsync(ct)
            : new Dictionary<string, uint>();
        return await GoAsync(structured, contexts, noZeroes, ct);
    }

    private async Task StartTlsAsync(NbdClientTls tls, CancellationToken ct)
    {
        var reply = await OptionAsync(OptStartTls, [], ct);
        if (reply.Type is RepErrUnsup or RepErrPolicy) throw Fail("does not offer TLS (" + Describe(reply) + ")");
        if (reply.Type != RepAck) throw Fail("refused STARTTLS (" + Describe(reply) + ")");
        _stream = await NbdClientTlsUpgrade.AuthenticateAsync(_stream, tls, options, ct);
    }

    private async Task<bool> StructuredReplyAsync(CancellationToken ct)
    {
        var reply = await OptionAsync(OptStructuredReply, [], ct);
        if (reply.Type == RepAck) return true;
        ThrowOnTlsRequired(reply);
        return false; // UNSUP, POLICY: simple replies only, and no block status
    }

    private async Task<Dictionary<string, uint>> SetMetaContextAsync(CancellationToken ct)
    {
        var name = Encoding.UTF8.GetBytes(Export);
        var queries = options.MetaContexts.Select(Encoding.UTF8.GetBytes).ToArray();
        var data = new byte[MetaContextRequestData.MinLength + name.Length + queries.Sum(q => MetaContextRequestData.QueryLengthSize + q.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(MetaContextRequestData.NameLengthOffset), (uint)name.Length);
        name.CopyTo(data, MetaContextRequestData.NameOffset);
        var at = MetaContextRequestData.NameOffset + name.Length;
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(at), (uint)queries.Length);
        at += MetaContextRequestData.CountSize;
        foreach (var q in queries)
        {
            BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(at), (uint)q.Length);
            q.CopyTo(data, at + MetaContextRequestData.QueryLengthSize);
            at += MetaContextRequestData.QueryLengthSize + q.Length;
        }

        await SendOptionAsync(OptSetMetaContext, data, ct);
        var contexts = new Dictionary<string, uint>(StringComparer.Ordinal);
        while (true)
        {
            var reply = await ReadOptionReplyAsync(OptSetMetaContext, ct);
            if (reply.Type == RepAck) return contexts;
            if (reply.Type == RepMetaContext)
            {
                if (reply.Data.Length < MetaContextPayload.NameOffset) throw Fail("sent a malformed NBD_REP_META_CONTEXT");
                var id = BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(MetaContextPayload.IdOffset));
                contexts[Encoding.UTF8.GetString(reply.Data.AsSpan(MetaContextPayload.NameOffset))] = id;
                continue;
            }
            if ((reply.Type & RepErrorBit) == 0) continue; // an informational reply we do not know: skip it
            ThrowOnTlsRequired(reply);
            if (reply.Type == RepErrUnknown) throw NotFound();
            return []; // UNSUP, INVALID, POLICY: no contexts, so block status reports everything allocated
        }
    }

    private async Task<NbdNegotiation> GoAsync(bool structured, Dictionary<string, uint> contexts, bool noZeroes, CancellationToken ct)
    {
        var name = Encoding.UTF8.GetBytes(Export);
        var data = new byte[InfoRequestData.MinLength + name.Length + InfoRequestData.ItemSize];
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(InfoRequestData.NameLengthOffset), (uint)name.Length);
        name.CopyTo(data, InfoRequestData.NameOffset);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(InfoRequestData.NameOffset + name.Length), 1);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(InfoRequestData.NameOffset + name.Length + InfoRequestData.CountSize), InfoBlockSize);

        await SendOptionAsync(OptGo, data, ct);
        long? size = null;
        ushort flags = 0;
        uint minimum = 1, maximum = NbdClient.DefaultMaximumPayload;
        while (true)
        {
            var reply = await ReadOptionReplyAsync(OptGo, ct);
            if (reply.Type == RepInfo && reply.Data.Length >= sizeof(ushort))
            {
                var info = BinaryPrimitives.ReadUInt16BigEndian(reply.Data.AsSpan(InfoExportPayload.TypeOffset));
                if (info == InfoExport && reply.Data.Length >= InfoExportPayload.Length)
                {
                    size = CheckedSize(BinaryPrimitives.ReadUInt64BigEndian(reply.Data.AsSpan(InfoExportPayload.SizeOffset)));
                    flags = BinaryPrimitives.ReadUInt16BigEndian(reply.Data.AsSpan(InfoExportPayload.FlagsOffset));
                }
                else if (info == InfoBlockSize && reply.Data.Length >= InfoBlockSizePayload.Length)
                {
                    minimum = Math.Max(1, BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(InfoBlockSizePayload.MinimumOffset)));
                    maximum = BinaryPrimitives.ReadUInt32BigEndian(reply.Data.AsSpan(InfoBlockSizePayload.MaximumOffset));
                }
                continue;
            }
            if (reply.Type == RepAck) break;
            if ((reply.Type & RepErrorBit) == 0) continue;
            if (reply.Type == RepErrUnsup) return await ExportNameAsync(structured, contexts, noZeroes, ct);
            ThrowOnTlsRequired(reply);
            if (reply.Type == RepErrUnknown) throw NotFound();
            throw Fail($"refused export '{Export}' ({Describe(reply)})");
        }
        if (size is null) throw Fail("acknowledged NBD_OPT_GO without sending the export's size");
        return new NbdNegotiation
        {
            Stream = _stream,
            Size = size.Value,
            TransmissionFlags = flags,
            Structured = structured,
            Contexts = contexts,
            MinimumBlockSize = minimum,
            // A maximum below the minimum or above our default is not worth honouring literally; 32 MiB is what every server takes.
            MaximumPayload = maximum >= minimum && maximum > 0 ? Math.Min(maximum, NbdClient.DefaultMaximumPayload) : NbdClient.DefaultMaximumPayload,
        };
    }

    /// <summary>The old way into transmission, for servers that reply UNSUP to GO: the server closes the connection on an unknown name.</summary>
    private async Task<NbdNegotiation> ExportNameAsync(bool structured, Dictionary<string, uint> contexts, bool noZeroes, CancellationToken ct)
    {
        await SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes(Export), ct);
        var reply = new byte[noZeroes ? ExportNameReply.ShortLength : ExportNameReply.FullLength];
        try
        {
            await _stream.ReadExactlyAsync(reply, ct);
        }
        catch (EndOfStreamException)
        {
            throw NotFound();
        }
        return new NbdNegotiation
        {
            Stream = _stream,
            Size = CheckedSize(BinaryPrimitives.ReadUInt64BigEndian(reply.AsSpan(ExportNameReply.SizeOffset))),
            TransmissionFlags = BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(ExportNameReply.FlagsOffset)),
            Structured = structured,
            Contexts = contexts,
        };
    }

    private long CheckedSize(ulong size) =>
        size <= long.MaxValue ? (long)size : throw Fail(FormattableString.Invariant($"reported an export size of {size} bytes, beyond what a file can hold"));

    private void ThrowOnTlsRequired((uint Type, byte[] Data) reply)
    {
        if (reply.Type == RepErrTlsReqd)
            throw new IOException($"nbd server {_endpoint} requires TLS for export '{Export}' (NBD_REP_ERR_TLS_REQD); connect with TLS credentials");
    }

    private IOException NotFound() => new($"export '{Export}' not found on nbd server {_endpoint}");

    private IOException Fail(string what) => new($"nbd server {_endpoint} {what}");

    private static string Describe((uint Type, byte[] Data) reply)
    {
        var text = (reply.Type & RepErrorBit) != 0 && reply.Data.Length > 0 ? NbdClientErrors.OneLine(Encoding.UTF8.GetString(reply.Data)) : "";
        var name = (reply.Type & RepErrorBit) != 0 ? NbdClientErrors.OptionErrorName(reply.Type) : FormattableString.Invariant($"reply type {reply.Type}");
        return text.Length > 0 ? name + ": " + text : name;
    }

    private async Task<(uint Type, byte[] Data)> OptionAsync(uint option, byte[] data, CancellationToken ct)
    {
        await SendOptionAsync(option, data, ct);
        return await ReadOptionReplyAsync(option, ct);
    }

    private async Task SendOptionAsync(uint option, byte[] data, CancellationToken ct)
    {
        var message = new byte[OptionHeader.Size + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message.AsSpan(OptionHeader.MagicOffset), OptMagic);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(OptionHeader.OptionOffset), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(OptionHeader.LengthOffset), (uint)data.Length);
        data.CopyTo(message, OptionHeader.Size);
        try
        {
            await _stream.WriteAsync(message, ct);
        }
        catch (IOException ex)
        {
            throw new IOException($"nbd server {_endpoint} closed the connection during the handshake for export '{Export}'", ex);
        }
    }

    private async Task<(uint Type, byte[] Data)> ReadOptionReplyAsync(uint option, CancellationToken ct)
    {
        var header = new byte[OptionReplyHeader.Size];
        await ReadExactlyAsync(header, "during the handshake", ct);
        if (BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(OptionReplyHeader.MagicOffset)) != OptReplyMagic)
            throw Fail("sent an option reply without the reply magic");
        if (BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(OptionReplyHeader.OptionOffset)) != option)
            throw Fail("answered an option it was not asked");
        var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(OptionReplyHeader.LengthOffset));
        if (length > MaxOptionReplyLength) throw Fail(FormattableString.Invariant($"sent a {length}-byte option reply"));
        var data = new byte[length];
        await ReadExactlyAsync(data, "during the handshake", ct);
        return (BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(OptionReplyHeader.TypeOffset)), data);
    }

    private async Task ReadExactlyAsync(byte[] buffer, string when, CancellationToken ct)
    {
        try
        {
            await _stream.ReadExactlyAsync(buffer, ct);
        }
        catch (IOException ex)
        {
            throw new IOException($"nbd server {_endpoint} closed the connection {when} for export '{Export}'", ex);
        }
    }
}
