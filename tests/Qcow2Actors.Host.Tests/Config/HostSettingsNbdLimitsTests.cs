using Qcow2Actors.Host.Config;
using Qcow2Actors.Nbd;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Config;

/// <summary>The NBD hardening keys of <c>qcow2actors.host.nbd</c>: their defaults, their spellings and their refusals.</summary>
public sealed class HostSettingsNbdLimitsTests
{
    [Fact]
    public void Without_a_config_file_the_limits_are_the_servers_defaults()
    {
        using var dir = new TempDir();
        var settings = HostSettings.Load(null, dataDir: dir.Path, nbdPort: 0);
        Assert.Equal((0, 0, 0, TimeSpan.Zero), (settings.MaxConnections, settings.MaxNegotiating, settings.MaxConnectionsPerTenant, settings.IdleTimeout));
        Assert.Equal((NbdServerOptions.DefaultMaxInFlightRequests, NbdServerOptions.DefaultMaxInFlightBytes), (settings.MaxInFlightRequests, settings.MaxInFlightBytes));
    }

    [Fact]
    public void The_config_file_sets_every_limit()
    {
        using var dir = new TempDir();
        var conf = Path.Combine(dir.Path, "host.conf");
        File.WriteAllText(conf, """
            qcow2actors.host.nbd {
              max-connections = 500
              max-negotiating = 40
              max-connections-per-tenant = 8
              idle-timeout = 15m
              max-in-flight-requests = 16
              max-in-flight-bytes = 8M
            }
            """);
        var settings = HostSettings.Load(conf, dataDir: dir.Path, nbdPort: 0);
        Assert.Equal((500, 40, 8, TimeSpan.FromMinutes(15), 16, 8L << 20),
            (settings.MaxConnections, settings.MaxNegotiating, settings.MaxConnectionsPerTenant, settings.IdleTimeout, settings.MaxInFlightRequests, settings.MaxInFlightBytes));
        var nbd = settings.NbdOptions(null); // what the host's NBD server is started with
        Assert.Equal((500, 40, 8, TimeSpan.FromMinutes(15), 16, 8L << 20),
            (nbd.MaxConnections, nbd.MaxNegotiatingConnections, nbd.MaxConnectionsPerTenant, nbd.IdleTimeout, nbd.MaxInFlightRequests, nbd.MaxInFlightBytes));
    }

    [Theory]
    [InlineData("max-negotiating = -1", "qcow2actors.host.nbd.max-negotiating must not be negative")]
    [InlineData("max-connections-per-tenant = -2", "qcow2actors.host.nbd.max-connections-per-tenant must not be negative")]
    [InlineData("idle-timeout = -5s", "qcow2actors.host.nbd.idle-timeout '-5s' is not a duration (e.g. 30s, 5m)")]
    [InlineData("idle-timeout = soon", "qcow2actors.host.nbd.idle-timeout 'soon' is not a duration (e.g. 30s, 5m)")]
    [InlineData("max-in-flight-requests = 0", "qcow2actors.host.nbd.max-in-flight-requests must be at least 1")]
    [InlineData("max-in-flight-bytes = 0", "qcow2actors.host.nbd.max-in-flight-bytes must be at least 1 byte")]
    public void A_bad_limit_is_one_line_naming_its_key(string line, string message)
    {
        using var dir = new TempDir();
        var conf = Path.Combine(dir.Path, "host.conf");
        File.WriteAllText(conf, $"qcow2actors.host.nbd {{ {line} }}");
        Assert.Equal(message, Assert.Throws<ArgumentException>(() => HostSettings.Load(conf, dataDir: dir.Path, nbdPort: 0)).Message);
    }
}
