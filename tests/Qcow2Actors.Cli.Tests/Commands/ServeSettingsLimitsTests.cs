using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Nbd;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary><c>q2a serve</c>'s NBD limits: from the command line, else the config file, else the server's defaults.</summary>
public sealed class ServeSettingsLimitsTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static ServeSettings From(ServeLimitOptions? limits, string? configFile = null) =>
        ServeSettings.From(["a.qcow2"], null, 0, null, null, false, null, null, configFile, limits: limits);

    [Fact]
    public void Without_options_the_limits_are_the_servers_defaults()
    {
        var s = From(null);
        Assert.Equal((0, 0, NbdServerOptions.DefaultHandshakeTimeout, TimeSpan.Zero), (s.MaxConnections, s.MaxNegotiating, s.HandshakeTimeout, s.IdleTimeout));
        Assert.Equal((NbdServerOptions.DefaultMaxInFlightRequests, NbdServerOptions.DefaultMaxInFlightBytes), (s.MaxInFlightRequests, s.MaxInFlightBytes));
    }

    [Fact]
    public void Command_line_limits_win_over_the_config_file()
    {
        var config = _dir.File("serve.conf");
        File.WriteAllText(config, """
            q2a.serve {
              max-connections = 100, max-negotiating = 10, idle-timeout = 1h, max-in-flight-requests = 8, max-in-flight-bytes = 4M
              exports { b { path = "b.qcow2" } }
            }
            """);
        var file = From(null, config);
        Assert.Equal((100, 10, TimeSpan.FromHours(1), 8, 4L << 20), (file.MaxConnections, file.MaxNegotiating, file.IdleTimeout, file.MaxInFlightRequests, file.MaxInFlightBytes));

        var cli = From(new ServeLimitOptions(MaxConnections: 2000, MaxNegotiating: 50, HandshakeTimeout: "3", IdleTimeout: "90s",
            MaxInFlightRequests: 4, MaxInFlightBytes: "1M"), config);
        Assert.Equal((2000, 50, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(90), 4, 1L << 20),
            (cli.MaxConnections, cli.MaxNegotiating, cli.HandshakeTimeout, cli.IdleTimeout, cli.MaxInFlightRequests, cli.MaxInFlightBytes));
    }

    [Theory]
    [InlineData("500ms", 500)]
    [InlineData("5m", 300_000)]
    [InlineData("0", 0)]
    public void Durations_are_seconds_or_hocon_durations(string text, int milliseconds) =>
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), ServeSettings.ParseDuration(text, "--idle-timeout"));

    [Fact]
    public void A_bad_limit_is_one_line_naming_the_option()
    {
        Assert.Equal("invalid --idle-timeout 'soon': give a duration such as 30s, 500ms, 5m or 1h (0: never)",
            Assert.Throws<ArgumentException>(() => From(new ServeLimitOptions(IdleTimeout: "soon"))).Message);
        Assert.Equal("invalid --idle-timeout '1s}': give a duration such as 30s, 500ms, 5m or 1h (0: never)",
            Assert.Throws<ArgumentException>(() => From(new ServeLimitOptions(IdleTimeout: "1s}"))).Message);
        Assert.Equal("--max-in-flight-requests must be at least 1",
            Assert.Throws<ArgumentException>(() => From(new ServeLimitOptions(MaxInFlightRequests: 0))).Message);
        Assert.Equal("--max-negotiating must be at least 0",
            Assert.Throws<ArgumentException>(() => From(new ServeLimitOptions(MaxNegotiating: -1))).Message);
    }
}
