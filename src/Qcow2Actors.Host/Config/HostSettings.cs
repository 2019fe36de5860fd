using System.Net;
using System.Net.Sockets;
using Akka.Configuration;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Host.Auth;
using Qcow2Actors.Host.Registry;
using Qcow2Actors.Nbd;

namespace Qcow2Actors.Host.Config;

/// <summary>
/// Everything <c>q2a host</c> runs with: the <c>qcow2actors.host</c> section of the config file over the
/// reference configuration (hocon/reference.conf, where every key is documented), with command-line options on top.
/// </summary>
public sealed record HostSettings
{
    /// <summary>Directory of the tenants' images and of host-state.json.</summary>
    public required string DataDir { get; init; }

    /// <summary>
    /// Cluster mode (<c>q2a host --cluster</c> or <c>qcow2actors.host.cluster.enabled = on</c>): null for a single
    /// host. In a cluster the data directory is shared by every node.
    /// </summary>
    public Qcow2Actors.Host.Cluster.ClusterSettings? Cluster { get; init; }

    /// <summary>Where this host's host-state.json lives: the data directory, or DATA_DIR/.nodes/NODE in a cluster.</summary>
    public string StateDir => Cluster is null ? DataDir : Path.Combine(DataDir, ".nodes", Cluster.NodeName);

    /// <summary>Control API Unix socket path.</summary>
    public required string ControlSocket { get; init; }

    /// <summary>TCP port on 127.0.0.1 for the control API too; null: none.</summary>
    public int? ControlPort { get; init; }

    /// <summary>Where NBD clients connect (TCP or a Unix socket).</summary>
    public required EndPoint NbdEndPoint { get; init; }

    /// <summary>NBD handshake limit (zero: none).</summary>
    public TimeSpan HandshakeTimeout { get; init; } = NbdServerOptions.DefaultHandshakeTimeout;

    /// <summary>NBD connections at once; 0: the server's default.</summary>
    public int MaxConnections { get; init; }

    /// <summary>NBD TLS (<c>qcow2actors.host.nbd.tls.mode</c>): off, optional or required; with TLS, clients are mapped to tenants by their certificates.</summary>
    public NbdTlsMode NbdTlsMode { get; init; }

    /// <summary>The NBD server's x509 credentials (<c>qcow2actors.host.nbd.tls.x509-dir</c>, QEMU's layout); null with TLS off.</summary>
    public NbdTlsCredentials? NbdTlsCredentials { get; init; }
    /// <summary>NBD connections still negotiating at once; 0: the server's default (<see cref="NbdServerOptions.MaxNegotiatingConnections"/>).</summary>
    public int MaxNegotiating { get; init; }

    /// <summary>NBD connections on one tenant's exports at once; 0: no bound.</summary>
    public int MaxConnectionsPerTenant { get; init; }

    /// <summary>A transmitting NBD client with nothing in flight this long is closed; zero: never.</summary>
    public TimeSpan IdleTimeout { get; init; }

    /// <summary>Requests one NBD connection may have unanswered at once.</summary>
    public int MaxInFlightRequests { get; init; } = NbdServerOptions.DefaultMaxInFlightRequests;

    /// <summary>Payload bytes one NBD connection may hold at once (data read or written, replies not yet sent).</summary>
    public long MaxInFlightBytes { get; init; } = NbdServerOptions.DefaultMaxInFlightBytes;

    /// <summary>The NBD server's options for these settings (exports are added at run time).</summary>
    internal NbdServerOptions NbdOptions(Microsoft.Extensions.Logging.ILoggerFactory? loggers) => new()
    {
        Exports = [],
        AllowNoExports = true,
        EndPoint = NbdEndPoint,
        HandshakeTimeout = HandshakeTimeout,
        MaxConnections = MaxConnections,
        MaxNegotiatingConnections = MaxNegotiating,
        MaxConnectionsPerTenant = MaxConnectionsPerTenant,
        IdleTimeout = IdleTimeout,
        MaxInFlightRequests = MaxInFlightRequests,
        MaxInFlightBytes = MaxInFlightBytes,
        TlsMode = NbdTlsMode,
        TlsCredentials = NbdTlsCredentials,
        LoggerFactory = loggers,
    };

    /// <summary>Host page cache mode of the images opened.</summary>
    public CacheMode Cache { get; init; } = CacheMode.Writeback;

    /// <summary>What TRIM does on the exports.</summary>
    public DiscardMode Discard { get; init; } = DiscardMode.Unmap;

    /// <summary>How long requests in flight may take at stop before clients are cut off.</summary>
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>True for JSON console logs, false for one text line per event.</summary>
    public bool JsonLogs { get; init; }

    /// <summary>The config file (null: reference values only); re-read on SIGHUP.</summary>
    public string? ConfigFile { get; init; }

    /// <summary>The whole configuration (file over reference), handed to the engine too.</summary>
    public required Akka.Configuration.Config Config { get; init; }

    /// <summary>Who may use the control API (<c>qcow2actors.host.control</c>); null: the defaults for <see cref="DataDir"/>.</summary>
    internal ControlAuthSettings? Auth { get; init; }

    /// <summary>Tenants the config file states.</summary>
    internal IReadOnlyList<TenantConfig> Tenants { get; init; } = [];

    /// <summary>A duration key of <c>qcow2actors.host</c>; one that is not a duration (or is negative) is one line naming it.</summary>
    private static TimeSpan Duration(Akka.Configuration.Config host, string key, TimeSpan fallback)
    {
        TimeSpan value;
        try
        {
            value = host.GetTimeSpan(key, fallback, allowInfinite: false);
        }
        catch (FormatException)
        {
            throw new ArgumentException($"qcow2actors.host.{key} '{host.GetString(key)}' is not a duration (e.g. 30s, 5m)");
        }
        return value >= TimeSpan.Zero ? value : throw new ArgumentException($"qcow2actors.host.{key} must not be negative");
    }

    /// <summary>
    /// Reads <paramref name="configFile"/> (optional) and applies the command-line overrides.
    /// </summary>
    /// <exception cref="ArgumentException">A bad value, named with its key or option, in one line.</exception>
    public static HostSettings Load(string? configFile, string? dataDir = null, string? controlSocket = null,
        int? controlPort = null, int? nbdPort = null, string? nbdSocket = null)
    {
        var config = ReadConfig(configFile);
        var host = config.GetConfig("qcow2actors.host");
        dataDir ??= NonEmpty(host.GetString("data-dir", null));
        if (dataDir is null) throw new ArgumentException("no data directory: give --data-dir DIR or qcow2actors.host.data-dir");
        controlSocket ??= NonEmpty(host.GetString("control-socket", null)) ?? Host.ControlSocket.DefaultPath();
        controlPort ??= host.GetInt("control-port", 0) is var p and not 0 ? p : null;
        if (controlPort is < 1 or > 65535) throw new ArgumentException($"control port {controlPort} is out of range (1-65535)");
        if (nbdPort is not null && nbdSocket is not null) throw new ArgumentException("--port and --socket cannot be combined");
        nbdSocket ??= nbdPort is null ? NonEmpty(host.GetString("nbd.socket", null)) : null;
        int port = nbdPort ?? host.GetInt("nbd.port", NbdServerOptions.DefaultPort);
        if (port is < 0 or > 65535) throw new ArgumentException($"NBD port {port} is out of range (0-65535)");
        var bind = NonEmpty(host.GetString("nbd.bind", null)) ?? "127.0.0.1";
        if (nbdSocket is null && !IPAddress.TryParse(bind.Trim('[', ']'), out _))
            throw new ArgumentException($"qcow2actors.host.nbd.bind '{bind}' is not an IP address");
        EndPoint nbd = nbdSocket is not null
            ? new UnixDomainSocketEndPoint(Path.GetFullPath(nbdSocket))
            : new IPEndPoint(IPAddress.Parse(bind.Trim('[', ']')), port);
        var handshake = Duration(host, "nbd.handshake-timeout", NbdServerOptions.DefaultHandshakeTimeout);
        if (handshake < TimeSpan.Zero) throw new ArgumentException("qcow2actors.host.nbd.handshake-timeout must not be negative");
        int maxConnections = host.GetInt("nbd.max-connections", 0);
        if (maxConnections < 0) throw new ArgumentException("qcow2actors.host.nbd.max-connections must not be negative");
        var (tlsMode, tlsCredentials) = ReadNbdTls(host);
        int maxNegotiating = host.GetInt("nbd.max-negotiating", 0);
        if (maxNegotiating < 0) throw new ArgumentException("qcow2actors.host.nbd.max-negotiating must not be negative");
        int perTenant = host.GetInt("nbd.max-connections-per-tenant", 0);
        if (perTenant < 0) throw new ArgumentException("qcow2actors.host.nbd.max-connections-per-tenant must not be negative");
        var idle = Duration(host, "nbd.idle-timeout", TimeSpan.Zero);
        int inFlightRequests = host.GetInt("nbd.max-in-flight-requests", NbdServerOptions.DefaultMaxInFlightRequests);
        if (inFlightRequests < 1) throw new ArgumentException("qcow2actors.host.nbd.max-in-flight-requests must be at least 1");
        long inFlightBytes = host.HasPath("nbd.max-in-flight-bytes")
            ? host.GetByteSize("nbd.max-in-flight-bytes") ?? NbdServerOptions.DefaultMaxInFlightBytes
            : NbdServerOptions.DefaultMaxInFlightBytes;
        if (inFlightBytes < 1) throw new ArgumentException("qcow2actors.host.nbd.max-in-flight-bytes must be at least 1 byte");
        var stop = host.GetTimeSpan("stop-timeout", TimeSpan.FromSeconds(30), allowInfinite: false);
        var logFormat = host.GetString("log-format", "text");
        if (logFormat is not ("text" or "json")) throw new ArgumentException($"qcow2actors.host.log-format '{logFormat}' is invalid (text or json)");
        var auth = ControlAuthSettings.Read(config, Path.GetFullPath(dataDir), tcp: controlPort is not null);
        return new HostSettings
        {
            Auth = auth,
            DataDir = Path.GetFullPath(dataDir),
            ControlSocket = Path.GetFullPath(controlSocket),
            ControlPort = controlPort,
            NbdEndPoint = nbd,
            HandshakeTimeout = handshake,
            MaxConnections = maxConnections,
            NbdTlsMode = tlsMode,
            NbdTlsCredentials = tlsCredentials,
            MaxNegotiating = maxNegotiating,
            MaxConnectionsPerTenant = perTenant,
            IdleTimeout = idle,
            MaxInFlightRequests = inFlightRequests,
            MaxInFlightBytes = inFlightBytes,
            Cache = host.GetString("cache", "writeback") switch
            {
                "writeback" => CacheMode.Writeback,
                "none" => CacheMode.None,
                var other => throw new ArgumentException($"qcow2actors.host.cache '{other}' is invalid (none or writeback)"),
            },
            Discard = host.GetString("discard", "unmap") switch
            {
                "unmap" or "on" => DiscardMode.Unmap,
                "ignore" or "off" => DiscardMode.Ignore,
                var other => throw new ArgumentException($"qcow2actors.host.discard '{other}' is invalid (ignore or unmap)"),
            },
            StopTimeout = stop,
            JsonLogs = logFormat == "json",
            ConfigFile = configFile is null ? null : Path.GetFullPath(configFile),
            Config = config,
            Tenants = ReadTenants(config),
            Cluster = host.GetBoolean("cluster.enabled", false) ? Qcow2Actors.Host.Cluster.ClusterSettings.Read(config) : null,
        };
    }

    /// <summary><c>qcow2actors.host.nbd.tls { mode, x509-dir }</c>: the mode, and the credentials it needs unless off.</summary>
    private static (NbdTlsMode Mode, NbdTlsCredentials? Credentials) ReadNbdTls(Akka.Configuration.Config host)
    {
        var mode = host.GetString("nbd.tls.mode", "off") switch
        {
            "off" => NbdTlsMode.Off,
            "optional" => NbdTlsMode.Optional,
            "required" => NbdTlsMode.Required,
            var other => throw new ArgumentException($"qcow2actors.host.nbd.tls.mode '{other}' is invalid (off, optional or required)"),
        };
        if (mode == NbdTlsMode.Off) return (mode, null);
        var dir = NonEmpty(host.GetString("nbd.tls.x509-dir", null))
            ?? throw new ArgumentException($"qcow2actors.host.nbd.tls.x509-dir is required when qcow2actors.host.nbd.tls.mode is {host.GetString("nbd.tls.mode")}");
        try
        {
            return (mode, NbdTlsCredentials.LoadX509Directory(dir));
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"qcow2actors.host.nbd.tls.x509-dir: {ex.Message}");
        }
    }

    /// <summary>The file over the reference configuration; a file that cannot be read or parsed is one line.</summary>
    internal static Akka.Configuration.Config ReadConfig(string? configFile)
    {
        if (configFile is null) return ImageHost.ReferenceConfig;
        string text;
        try
        {
            text = File.ReadAllText(configFile);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"cannot read config file '{configFile}': {ex.Message}");
        }
        try
        {
            return ConfigurationFactory.ParseString(text).WithFallback(ImageHost.ReferenceConfig);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new ArgumentException($"config file '{configFile}' is not valid HOCON: {ex.Message.ReplaceLineEndings(" ")}");
        }
    }

    /// <summary><c>qcow2actors.host.tenants</c>: each tenant's quota, max-images and limits.</summary>
    internal static IReadOnlyList<TenantConfig> ReadTenants(Akka.Configuration.Config config)
    {
        if (!config.HasPath("qcow2actors.host.tenants")) return [];
        var section = config.GetConfig("qcow2actors.host.tenants");
        if (section is null || section.IsEmpty) return [];
        var tenants = new List<TenantConfig>();
        foreach (var entry in section.AsEnumerable().Select(e => e.Key.Split('.')[0]).Distinct(StringComparer.Ordinal))
        {
            try
            {
                Names.Check(entry, "tenant");
            }
            catch (HostApiException ex)
            {
                throw new ArgumentException($"qcow2actors.host.tenants: {ex.Message}");
            }
            var t = section.GetConfig(entry);
            string key = $"qcow2actors.host.tenants.{entry}";
            long? quota = t.HasPath("quota") ? t.GetByteSize("quota") : null;
            if (quota is < 0) throw new ArgumentException($"{key}.quota must not be negative");
            int? maxImages = t.HasPath("max-images") ? t.GetInt("max-images") : null;
            if (maxImages is < 0) throw new ArgumentException($"{key}.max-images must not be negative");
            LimitValues? limits = null;
            if (t.HasPath("limits"))
            {
                var l = t.GetConfig("limits");
                limits = new LimitValues
                {
                    Iops = l.GetLong("iops", 0), Bps = l.GetByteSize("bps") ?? 0,
                    ReadIops = l.GetLong("read-iops", 0), WriteIops = l.GetLong("write-iops", 0),
                    ReadBps = l.GetByteSize("read-bps") ?? 0, WriteBps = l.GetByteSize("write-bps") ?? 0,
                    BurstIops = l.GetLong("burst-iops", 0), BurstBps = l.GetByteSize("burst-bps") ?? 0,
                    BurstSeconds = (int)l.GetTimeSpan("burst-length", TimeSpan.Zero, allowInfinite: false).TotalSeconds,
                };
                try
                {
                    limits.Validate();
                }
                catch (HostApiException ex)
                {
                    throw new ArgumentException($"{key}.limits: {ex.Message}");
                }
            }
            IReadOnlyList<string> identities = t.HasPath("identities") ? [.. t.GetStringList("identities")] : [];
            if (identities.Any(string.IsNullOrWhiteSpace)) throw new ArgumentException($"{key}.identities must not hold an empty name");
            // One certificate name, one tenant: an NBD client must never depend on which tenant is looked at first.
            foreach (var identity in identities)
                if (tenants.FirstOrDefault(o => o.Identities.Any(n => SameIdentity(n, identity))) is { } other)
                    throw new ArgumentException($"qcow2actors.host.tenants: identity '{identity}' is listed for both '{other.Name}' and '{entry}'");
            tenants.Add(new TenantConfig(entry, quota, maxImages, limits) { Identities = identities });
        }
        return tenants;
    }

    private static string? NonEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    /// <summary>The same certificate name: equal ignoring case (DNS names), or one distinguished name however spaced.</summary>
    private static bool SameIdentity(string a, string b) =>
        string.Equals(a, b, StringComparison.OrdinalIgnoreCase)
        || (Qcow2Actors.Host.Auth.CertificateSubject.TryNormalize(a) is { } x && string.Equals(x, Qcow2Actors.Host.Auth.CertificateSubject.TryNormalize(b), StringComparison.Ordinal));
}
