using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Akka.Configuration;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Cli.Commands;

/// <summary>The NBD limits given on the command line; a null one comes from the config file, else its default.</summary>
internal sealed record ServeLimitOptions(
    int? MaxConnections = null, int? MaxNegotiating = null, string? HandshakeTimeout = null, string? IdleTimeout = null,
    int? MaxInFlightRequests = null, string? MaxInFlightBytes = null);

/// <summary>One image to serve: where it is, what clients call it, and how to open it.</summary>
/// <param name="Path">The image file.</param>
/// <param name="Name">The export name.</param>
/// <param name="ReadOnly">Open and export read-only.</param>
/// <param name="Format">"qcow2", "raw", or null to probe.</param>
/// <param name="CreateSize">Create the image with this virtual size when the file is missing.</param>
/// <param name="Discard">What NBD TRIM does to the image (qemu-nbd's --discard).</param>
/// <param name="Cache">How the image's files use the host page cache (qemu-nbd's --cache).</param>
/// <param name="Bitmaps">Persistent dirty bitmaps offered as <c>qemu:dirty-bitmap:NAME</c> (qemu-nbd's -B), in listing order.</param>
/// <param name="AllocationDepth">Offer <c>qemu:allocation-depth</c> (qemu-nbd's -A).</param>
/// <param name="Record">Record the guest's writes and flushes into this new crash-lab log (<c>--record</c>); null: no recording.</param>
internal sealed record ExportSpec(string Path, string Name, bool ReadOnly, string? Format, long? CreateSize,
    DiscardMode Discard = DiscardMode.Unmap, CacheMode Cache = CacheMode.Writeback,
    IReadOnlyList<string>? Bitmaps = null, bool AllocationDepth = false, string? Record = null);

/// <summary>
/// What <c>q2a serve</c> serves and where, from the command line and optionally a HOCON file:
/// <code>
/// q2a.serve {
///   bind = "127.0.0.1"          # or socket = "/run/q2a.sock"
///   port = 10809
///   read-only = false           # default for every export
///   discard = unmap             # or ignore: what TRIM does, default for every export
///   cache = writeback           # or none (O_DIRECT): the page cache, default for every export
///   handshake-timeout = 10s     # close clients that have not chosen an export by then (0s: never)
///   max-connections = 0         # 0: half the descriptors free at start (1..1024); 64 always stay free
///   max-negotiating = 0         # of those, still negotiating at once; 0: a quarter (all up to 16)
///   idle-timeout = 0s           # close transmitting clients with nothing in flight this long (0s: never)
///   max-in-flight-requests = 64 # per connection: requests unanswered at once
///   max-in-flight-bytes = 64M   # per connection: payload bytes held (replies not read yet included)
///   allocation-depth = off      # offer qemu:allocation-depth on every export (as -A)
///   exports {
///     disk { path = "disk.qcow2", create = 10G, discard = ignore, cache = none }
///     vm { path = "vm.qcow2", bitmaps = [backup-1], allocation-depth = on }  # qemu:dirty-bitmap:backup-1
///     lab { path = "lab.qcow2", record = "lab.crashlog" }  # as --record: a new crash-lab log
///     base { path = "/images/base.qcow2", read-only = true, format = qcow2 }
///   }
/// }
/// </code>
/// Options given on the command line win over the file; images named on the command line are
/// served after the file's exports.
/// </summary>
internal sealed record ServeSettings(IReadOnlyList<ExportSpec> Exports, EndPoint EndPoint)
{
    /// <summary>The whole configuration file, if any: engine settings (qcow2actors, akka) may sit beside q2a.serve.</summary>
    public Config? FileConfig { get; init; }

    /// <summary>How long a stopping server waits for requests in flight before cutting clients off.</summary>
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Clients that have not chosen an export this long after connecting are closed; zero: never.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = NbdServerOptions.DefaultHandshakeTimeout;

    /// <summary>Most connections at once; 0: <see cref="NbdServerOptions.DefaultMaxConnections"/>.</summary>
    public int MaxConnections { get; init; }

    /// <summary>Whether clients may or must use TLS (<c>--tls</c>); Off unless <c>--tls-creds</c> is given.</summary>
    public NbdTlsMode TlsMode { get; init; }

    /// <summary>The server's x509 credentials (<c>--tls-creds DIR</c>); null without TLS.</summary>
    public NbdTlsCredentials? TlsCredentials { get; init; }

    /// <summary>Client certificate subjects allowed in (<c>--tls-authz</c>); empty: any certificate the CA signed.</summary>
    public IReadOnlyList<string> TlsAuthz { get; init; } = [];
    /// <summary>Most connections still negotiating at once; 0: the server's default.</summary>
    public int MaxNegotiating { get; init; }

    /// <summary>Transmitting clients with nothing in flight this long are closed; zero: never.</summary>
    public TimeSpan IdleTimeout { get; init; }

    /// <summary>Requests one connection may have unanswered at once.</summary>
    public int MaxInFlightRequests { get; init; } = NbdServerOptions.DefaultMaxInFlightRequests;

    /// <summary>Payload bytes one connection may hold at once.</summary>
    public long MaxInFlightBytes { get; init; } = NbdServerOptions.DefaultMaxInFlightBytes;

    /// <summary>Opens the qcow2 images' files instead of the host file system (tests inject faults); null: host files.</summary>
    public Func<string, bool, Engine.Device.IBlockDevice>? DeviceFactory { get; init; }

    public static ServeSettings From(string[] images, string? bind, int? port, string? socket, string? exportName,
        bool readOnly, string? create, string? format, string? configFile, string? discard = null, string? cache = null,
        ServeLimitOptions? limits = null, IReadOnlyList<string>? bitmaps = null, bool allocationDepth = false, string? record = null)
    {
        bitmaps ??= [];
        limits ??= new ServeLimitOptions();
        var whole = configFile is null ? null : ConfigurationFactory.ParseString(File.ReadAllText(configFile));
        var file = whole?.GetConfig("q2a.serve");
        bind ??= NonEmpty(file?.GetString("bind", null));
        socket ??= NonEmpty(file?.GetString("socket", null));
        if (port is null && file?.HasPath("port") == true) port = file.GetInt("port");
        bool defaultReadOnly = readOnly || (file?.GetBoolean("read-only", false) ?? false);
        bool defaultAllocationDepth = allocationDepth || (file?.GetBoolean("allocation-depth", false) ?? false);
        var defaultDiscard = ParseDiscard(discard ?? NonEmpty(file?.GetString("discard", null)), discard is null ? "q2a.serve.discard" : "--discard");
        var defaultCache = ParseCache(cache ?? NonEmpty(file?.GetString("cache", null)), cache is null ? "q2a.serve.cache" : "--cache");
        var handshakeTimeout = limits.HandshakeTimeout is { } ht ? ParseDuration(ht, "--handshake-timeout")
            : file?.HasPath("handshake-timeout") == true ? file.GetTimeSpan("handshake-timeout", null, allowInfinite: false)
            : NbdServerOptions.DefaultHandshakeTimeout;
        if (handshakeTimeout < TimeSpan.Zero) throw new ArgumentException($"q2a.serve.handshake-timeout must not be negative in {configFile}");
        var idleTimeout = limits.IdleTimeout is { } it ? ParseDuration(it, "--idle-timeout")
            : file?.HasPath("idle-timeout") == true ? file.GetTimeSpan("idle-timeout", null, allowInfinite: false)
            : TimeSpan.Zero;
        if (idleTimeout < TimeSpan.Zero) throw new ArgumentException($"q2a.serve.idle-timeout must not be negative in {configFile}");
        int maxConnections = Bound(limits.MaxConnections, "max-connections", 0, 0);
        int maxNegotiating = Bound(limits.MaxNegotiating, "max-negotiating", 0, 0);
        int maxInFlightRequests = Bound(limits.MaxInFlightRequests, "max-in-flight-requests", NbdServerOptions.DefaultMaxInFlightRequests, 1);
        long maxInFlightBytes = limits.MaxInFlightBytes is { } mb ? ParseSize(mb)
            : file?.HasPath("max-in-flight-bytes") == true ? file.GetByteSize("max-in-flight-bytes") ?? NbdServerOptions.DefaultMaxInFlightBytes
            : NbdServerOptions.DefaultMaxInFlightBytes;
        if (maxInFlightBytes < 1) throw new ArgumentException($"q2a.serve.max-in-flight-bytes must be at least 1 byte in {configFile}");

        // A command-line count, else the file's, else the default; below the minimum is one line naming where it came from.
        int Bound(int? given, string key, int fallback, int minimum)
        {
            int value = given ?? (file?.HasPath(key) == true ? file.GetInt(key) : fallback);
            if (value < minimum)
                throw new ArgumentException(given is not null
                    ? $"--{key} must be at least {minimum}"
                    : $"q2a.serve.{key} must be at least {minimum} in {configFile}");
            return value;
        }
        if (socket is not null && (bind is not null || port is not null))
            throw new ArgumentException("--socket cannot be combined with --bind or --port");
        if (exportName is not null && images.Length != 1)
            throw new ArgumentException("--export-name needs exactly one image");
        if (exportName is { Length: 0 }) throw new ArgumentException("--export-name must not be empty");
        if (bitmaps.Count > 0 && images.Length != 1)
            throw new ArgumentException("--bitmap needs exactly one image on the command line (per-export bitmaps go in --config)");
        if (record is not null && images.Length != 1)
            throw new ArgumentException("--record needs exactly one image on the command line (per-export logs go in --config)");
        if (record is { Length: 0 }) throw new ArgumentException("--record must name a log file");
        long? createSize = create is null ? null : ParseSize(create);

        var exports = new List<ExportSpec>();
        if (file?.HasPath("exports") == true)
        {
            var section = file.GetConfig("exports");
            foreach (var entry in section.AsEnumerable())
            {
                var e = section.GetConfig(entry.Key);
                var path = NonEmpty(e.GetString("path", null))
                    ?? throw new ArgumentException($"export '{entry.Key}' in {configFile} has no path");
                if (configFile is not null && !System.IO.Path.IsPathRooted(path))
                    path = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(configFile))!, path);
                var size = NonEmpty(e.GetString("create", null));
                var exportDiscard = discard is null && NonEmpty(e.GetString("discard", null)) is { } d
                    ? ParseDiscard(d, $"discard of export '{entry.Key}'")
                    : defaultDiscard;
                var exportCache = cache is null && NonEmpty(e.GetString("cache", null)) is { } c
                    ? ParseCache(c, $"cache of export '{entry.Key}'")
                    : defaultCache;
                var exportBitmaps = e.HasPath("bitmaps") ? e.GetStringList("bitmaps") : [];
                if (exportBitmaps.FirstOrDefault(string.IsNullOrEmpty) is not null)
                    throw new ArgumentException($"bitmaps of export '{entry.Key}' in {configFile} has an empty name");
                var exportRecord = NonEmpty(e.GetString("record", null));
                if (exportRecord is not null && configFile is not null && !System.IO.Path.IsPathRooted(exportRecord))
                    exportRecord = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(configFile))!, exportRecord);
                exports.Add(new ExportSpec(path, NonEmpty(e.GetString("name", null)) ?? entry.Key,
                    readOnly || e.GetBoolean("read-only", defaultReadOnly),
                    format ?? NonEmpty(e.GetString("format", null)),
                    size is null ? createSize : ParseSize(size), exportDiscard, exportCache,
                    exportBitmaps.ToArray(), allocationDepth || e.GetBoolean("allocation-depth", defaultAllocationDepth), exportRecord));
            }
        }
        foreach (var image in images)
            exports.Add(new ExportSpec(image, exportName ?? System.IO.Path.GetFileName(image), defaultReadOnly, format, createSize, defaultDiscard, defaultCache,
                // qemu-nbd lists -B bitmaps last given first; so do we.
                bitmaps.Reverse().Distinct(StringComparer.Ordinal).ToArray(), defaultAllocationDepth, record));
        if (exports.Count == 0) throw new ArgumentException("no image to serve: name one or more, or give --config with exports");
        if (exports.Select(e => e.Name).GroupBy(n => n, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } duplicate)
            throw new ArgumentException($"two exports are named '{duplicate.Key}'; serve them from one directory per name or use --config");
        foreach (var e in exports.Where(e => e.Record is not null))
        {
            if (e.ReadOnly) throw new ArgumentException($"--record cannot record '{e.Path}': it is served read-only, so there is nothing to record");
            if (e.Format == "raw") throw new ArgumentException($"--record cannot record '{e.Path}': a raw image has no internal snapshot to start from (convert it to qcow2)");
        }
        if (exports.Where(e => e.Record is not null).GroupBy(e => System.IO.Path.GetFullPath(e.Record!), StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } shared)
            throw new ArgumentException($"two exports record into '{shared.Key}'; give each its own log");
        if (format is not null and not ("qcow2" or "raw"))
            throw new ArgumentException($"unknown format '{format}' (qcow2 or raw)");

        if (port is < 0 or > 65535) throw new ArgumentException($"port {port} is out of range");
        EndPoint endPoint = socket is not null
            ? new UnixDomainSocketEndPoint(System.IO.Path.GetFullPath(socket))
            : new IPEndPoint(ResolveBind(bind), port ?? NbdServerOptions.DefaultPort);
        return new ServeSettings(exports, endPoint)
        {
            FileConfig = whole,
            HandshakeTimeout = handshakeTimeout,
            MaxConnections = maxConnections,
            MaxNegotiating = maxNegotiating,
            IdleTimeout = idleTimeout,
            MaxInFlightRequests = maxInFlightRequests,
            MaxInFlightBytes = maxInFlightBytes,
        };
    }

    /// <summary>
    /// A duration from the command line: whole seconds (<c>30</c>) or a HOCON duration as in the file
    /// (<c>30s</c>, <c>500ms</c>, <c>5m</c>, <c>1h</c>).
    /// </summary>
    internal static TimeSpan ParseDuration(string text, string option)
    {
        var s = text.Trim();
        if (long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) && seconds <= int.MaxValue)
            return TimeSpan.FromSeconds(seconds);
        var fail = new ArgumentException($"invalid {option} '{text}': give a duration such as 30s, 500ms, 5m or 1h (0: never)");
        if (s.Length == 0 || !s.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or ' ')) throw fail;
        try
        {
            var value = ConfigurationFactory.ParseString($"v = {s}").GetTimeSpan("v", null, allowInfinite: false);
            return value >= TimeSpan.Zero ? value : throw fail;
        }
        catch (Exception ex) when (ex is not ArgumentException)
        {
            throw fail;
        }
    }

    /// <summary>qemu-nbd's --discard spellings: ignore/off (TRIM does nothing), unmap/on (TRIM frees); null: unmap.</summary>
    private static DiscardMode ParseDiscard(string? text, string what) => text switch
    {
        null or "unmap" or "on" => DiscardMode.Unmap,
        "ignore" or "off" => DiscardMode.Ignore,
        _ => throw new ArgumentException($"invalid {what} '{text}' (ignore or unmap)"),
    };

    /// <summary>
    /// qemu-nbd's --cache spellings we serve: writeback (the page cache; the default) and none
    /// (O_DIRECT). The others (writethrough, directsync, unsafe) change flush semantics and are refused.
    /// </summary>
    private static CacheMode ParseCache(string? text, string what) => text switch
    {
        null or "writeback" => CacheMode.Writeback,
        "none" => CacheMode.None,
        _ => throw new ArgumentException($"invalid {what} '{text}' (none or writeback)"),
    };

    private static string? NonEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    private static IPAddress ResolveBind(string? bind)
    {
        if (bind is null) return IPAddress.Loopback;
        if (IPAddress.TryParse(bind.Trim('[', ']'), out var address)) return address;
        var addresses = Dns.GetHostAddresses(bind);
        return addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
            ?? addresses.FirstOrDefault()
            ?? throw new ArgumentException($"cannot resolve '{bind}'");
    }

    /// <summary>
    /// A size as qemu-img takes it: a number of bytes, optionally with a fraction and one of the
    /// binary suffixes B, K, M, G, T, P, E (case-insensitive; "k" = 1024).
    /// </summary>
    public static long ParseSize(string text)
    {
        var s = text.Trim();
        int split = s.Length;
        while (split > 0 && char.IsLetter(s[split - 1])) split--;
        var suffix = s[split..].ToUpperInvariant();
        if (suffix.Length == 2 && suffix[1] == 'B' || suffix.Length == 3 && suffix.EndsWith("IB", StringComparison.Ordinal))
            suffix = suffix[..1]; // "GB", "GiB": qemu-img only takes "G", but nobody means anything else
        int shift = suffix switch
        {
            "" or "B" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            "P" => 50,
            "E" => 60,
            _ => throw new ArgumentException($"invalid size '{text}': unknown suffix '{s[split..]}'"),
        };
        if (!decimal.TryParse(s[..split], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
            throw new ArgumentException($"invalid size '{text}'");
        var bytes = number * (decimal)Math.Pow(2, shift);
        if (bytes <= 0 || bytes > long.MaxValue || bytes != decimal.Truncate(bytes))
            throw new ArgumentException($"invalid size '{text}': must be a positive whole number of bytes");
        return (long)bytes;
    }
}
