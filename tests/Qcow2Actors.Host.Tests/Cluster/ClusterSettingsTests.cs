using System.Net;
using System.Net.Http.Json;
using Akka.Configuration;
using Qcow2Actors.Engine;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Cluster;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Cluster;

/// <summary><c>qcow2actors.host.cluster</c>: what a node reads, what it refuses (one line naming the key), and a single host refusing the cluster routes.</summary>
public sealed class ClusterSettingsTests : IDisposable
{
    private readonly TempDir _dir = new();

    private static Akka.Configuration.Config Conf(string cluster) =>
        ConfigurationFactory.ParseString("qcow2actors.host.cluster {\n" + cluster + "\n}").WithFallback(ImageHost.ReferenceConfig);

    private const string Valid = """
        port = 4101
        seed-nodes = ["akka.tcp://q2a-host@127.0.0.1:4101", "akka.tcp://q2a-host@127.0.0.1:4102"]
        journal.connection-string = "Host=127.0.0.1;Port=5432;Username=q2a;Database=q2a"
        """;

    [Fact]
    public void A_node_reads_its_port_seed_nodes_and_journal_and_keeps_its_state_per_node()
    {
        var c = ClusterSettings.Read(Conf(Valid));
        Assert.Equal("127.0.0.1", c.Hostname);
        Assert.Equal(4101, c.Port);
        Assert.Equal(["akka.tcp://q2a-host@127.0.0.1:4101", "akka.tcp://q2a-host@127.0.0.1:4102"], c.SeedNodes);
        Assert.Equal("PostgreSQL.15", c.ProviderName);
        Assert.Equal("akka.tcp://q2a-host@127.0.0.1:4101", c.Address);

        var file = _dir.File("host.conf");
        File.WriteAllText(file, "qcow2actors.host.cluster {\nenabled = on\n" + Valid + "\n}");
        var settings = HostSettings.Load(file, dataDir: _dir.File("data"), controlSocket: _dir.File("c.sock"), nbdPort: 0);
        Assert.NotNull(settings.Cluster);
        Assert.Equal(Path.Combine(settings.DataDir, ".nodes", "127.0.0.1-4101"), settings.StateDir);
        Assert.Null(HostSettings.Load(null, dataDir: _dir.File("data"), controlSocket: _dir.File("c.sock"), nbdPort: 0).Cluster);
    }

    [Theory]
    [InlineData("hostname = node-a.example", "qcow2actors.host.cluster.hostname 'node-a.example' is not an IP address")]
    [InlineData("port = 70000", "qcow2actors.host.cluster.port 70000 is out of range")]
    [InlineData("seed-nodes = []", "qcow2actors.host.cluster.seed-nodes is empty")]
    [InlineData("seed-nodes = [\"akka.tcp://other@127.0.0.1:4101\"]", "'akka.tcp://other@127.0.0.1:4101' is not a node address")]
    [InlineData("journal.connection-string = \"\"", "qcow2actors.host.cluster.journal.connection-string is required")]
    [InlineData("shards = 0", "qcow2actors.host.cluster.shards must be at least 1")]
    [InlineData("sbr-tick-interval = 5ms", "qcow2actors.host.cluster.sbr-tick-interval must be between 10ms and 1s, or off")]
    [InlineData("sbr-tick-interval = 2s", "qcow2actors.host.cluster.sbr-tick-interval must be between 10ms and 1s, or off")]
    public void A_bad_cluster_setting_is_refused_in_one_line_naming_it(string bad, string message)
    {
        var ex = Assert.Throws<ArgumentException>(() => ClusterSettings.Read(Conf(Valid + "\n" + bad)));
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Theory]
    [InlineData("", 100)]
    [InlineData("sbr-tick-interval = 250ms", 250)]
    [InlineData("sbr-tick-interval = off", 0)]
    public void The_split_brain_resolver_is_asked_every_sbr_tick_interval_or_only_on_its_own_tick_when_off(string line, int milliseconds)
    {
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), ClusterSettings.Read(Conf(Valid + "\n" + line)).SbrTickInterval);
    }

    [Fact]
    public void This_Akka_Cluster_has_the_split_brain_resolver_tick_the_ticker_sends()
    {
        // The tick is internal to Akka.Cluster (looked up by name): an Akka upgrade that renames it fails here, not
        // silently in a slower fail-over.
        Assert.NotNull(SbrTicker.ResolverTick());
    }

    [Fact]
    public async Task A_single_host_answers_the_cluster_routes_with_bad_request()
    {
        await using var host = await HostHarness.StartAsync(_dir.Path);
        var status = await HostHarness.ErrorAsync(host.Client.GetAsync(Routes.Cluster), HttpStatusCode.BadRequest);
        Assert.Contains("not in cluster mode", status.Message, StringComparison.Ordinal);
        var serve = await HostHarness.ErrorAsync(host.Client.PostAsJsonAsync(Routes.ClusterImages, new ClusterImageRequest { Tenant = "acme", Image = "disk" }, HostJson.Options), HttpStatusCode.BadRequest);
        Assert.Equal(ErrorCodes.BadRequest, serve.Code);
    }

    public void Dispose() => _dir.Dispose();
}
