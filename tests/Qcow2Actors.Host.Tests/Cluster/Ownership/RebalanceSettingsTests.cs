using System.Net;
using Akka.Configuration;
using Qcow2Actors.Engine;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Cluster;
using Qcow2Actors.Host.Cluster.Ownership;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Cluster.Ownership;

/// <summary><c>qcow2actors.host.cluster.rebalance-*</c>: what a node reads, what it refuses, and the sharding keys it sets.</summary>
public sealed class RebalanceSettingsTests : IDisposable
{
    private readonly TempDir _dir = new();

    private const string Valid = """
        port = 4101
        seed-nodes = ["akka.tcp://q2a-host@127.0.0.1:4101"]
        journal.connection-string = "Host=127.0.0.1;Port=5432;Username=q2a;Database=q2a"
        """;

    private static ClusterSettings Read(string extra) =>
        ClusterSettings.Read(ConfigurationFactory.ParseString("qcow2actors.host.cluster {\n" + Valid + "\n" + extra + "\n}").WithFallback(ImageHost.ReferenceConfig));

    /// <summary>What Akka reads from the node's cluster HOCON (sharding's own keys).</summary>
    private static Akka.Configuration.Config Sharding(ClusterSettings c) =>
        ConfigurationFactory.ParseString(c.Hocon()).GetConfig("akka.cluster.sharding");

    [Fact]
    public void By_default_a_joining_node_gets_its_share_within_seconds_a_few_shards_a_round()
    {
        var c = Read("");
        Assert.Equal(RebalanceSettings.Default, c.Rebalance);
        var sharding = Sharding(c);
        Assert.Equal(TimeSpan.FromSeconds(2), sharding.GetTimeSpan("rebalance-interval"));
        Assert.Equal(2, sharding.GetInt("least-shard-allocation-strategy.rebalance-absolute-limit"));
        Assert.Equal(0.1, sharding.GetDouble("least-shard-allocation-strategy.rebalance-relative-limit"));
    }

    [Fact]
    public void The_rebalance_keys_set_shardings_interval_and_limits()
    {
        var c = Read("rebalance-interval = 500ms\nrebalance-absolute-limit = 5\nrebalance-relative-limit = 0.5");
        Assert.Equal(new RebalanceSettings(TimeSpan.FromMilliseconds(500), 5, 0.5), c.Rebalance);
        var sharding = Sharding(c);
        Assert.Equal(TimeSpan.FromMilliseconds(500), sharding.GetTimeSpan("rebalance-interval"));
        Assert.Equal(5, sharding.GetInt("least-shard-allocation-strategy.rebalance-absolute-limit"));
        Assert.Equal(0.5, sharding.GetDouble("least-shard-allocation-strategy.rebalance-relative-limit"));
    }

    [Fact]
    public void An_absolute_limit_of_zero_turns_rebalancing_off()
    {
        var sharding = Sharding(Read("rebalance-absolute-limit = 0"));
        // The strategy's older algorithm (absolute limit 0) with a threshold no difference in shard counts exceeds.
        Assert.Equal(0, sharding.GetInt("least-shard-allocation-strategy.rebalance-absolute-limit"));
        Assert.Equal(int.MaxValue, sharding.GetInt("least-shard-allocation-strategy.rebalance-threshold"));
    }

    [Theory]
    [InlineData("rebalance-interval = 0s", "qcow2actors.host.cluster.rebalance-interval must be positive")]
    [InlineData("rebalance-absolute-limit = -1", "qcow2actors.host.cluster.rebalance-absolute-limit -1 is negative")]
    [InlineData("rebalance-relative-limit = 1.5", "qcow2actors.host.cluster.rebalance-relative-limit 1.5 is out of range")]
    [InlineData("rebalance-relative-limit = 0", "qcow2actors.host.cluster.rebalance-relative-limit 0 is out of range")]
    public void A_bad_rebalance_setting_is_refused_in_one_line_naming_it(string bad, string message)
    {
        var ex = Assert.Throws<ArgumentException>(() => Read(bad));
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public async Task A_single_host_answers_the_unserve_route_with_bad_request()
    {
        await using var host = await HostHarness.StartAsync(_dir.Path);
        var unserve = await HostHarness.ErrorAsync(host.Client.DeleteAsync(Routes.ClusterImagePath("acme", "disk")), HttpStatusCode.BadRequest);
        Assert.Equal(ErrorCodes.BadRequest, unserve.Code);
        Assert.Contains("not in cluster mode", unserve.Message, StringComparison.Ordinal);
    }

    public void Dispose() => _dir.Dispose();
}
