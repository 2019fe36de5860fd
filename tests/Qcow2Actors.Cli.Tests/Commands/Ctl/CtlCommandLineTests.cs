using System.Net;
using System.Net.Sockets;
using Qcow2Actors.Cli.Commands.Ctl;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests.Commands.Ctl;

/// <summary>
/// <c>q2a ctl</c>'s command line without a host: every usage error and every host that cannot be reached is
/// one line on stderr and exit 2, checked before anything is sent.
/// </summary>
public sealed class CtlCommandLineTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static async Task<(int Exit, string Out, string Err)> RunAsync(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        var exit = await CtlCommand.RunAsync(["ctl", .. args], stdout, stderr);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    private static void AssertOneLine(string expected, (int Exit, string Out, string Err) r)
    {
        Assert.Equal(2, r.Exit);
        Assert.Equal("", r.Out);
        Assert.Equal(expected + Environment.NewLine, r.Err);
    }

    [Theory]
    [InlineData("q2a ctl tenant add: unrecognized option '--quotta'", "tenant", "add", "acme", "--quotta", "1G")]
    [InlineData("q2a ctl: unrecognized command 'tenants' (q2a ctl --help lists them)", "tenants", "list")]
    [InlineData("q2a ctl tenant: unrecognized command 'ls' (q2a ctl tenant --help lists them)", "tenant", "ls")]
    [InlineData("q2a ctl: missing command, one of: tenant, token, image, export, snapshot, limit, cluster, health, metrics, openapi")]
    [InlineData("q2a ctl image create: Required argument 'SIZE' missing for command: 'create'.", "image", "create", "acme", "disk")]
    [InlineData("q2a ctl: SIZE: invalid size '1Q' (bytes, or a number with a k, M, G, T, P or E suffix)", "--control", "/nonexistent/c.sock", "image", "create", "acme", "disk", "1Q")]
    [InlineData("q2a ctl: --quota: invalid size '-1G' (bytes, or a number with a k, M, G, T, P or E suffix)", "--control", "/nonexistent/c.sock", "tenant", "add", "acme", "--quota", "-1G")]
    [InlineData("q2a ctl: --max-images: 'many' is not a non-negative whole number", "--control", "/nonexistent/c.sock", "tenant", "add", "acme", "--max-images", "many")]
    [InlineData("q2a ctl: tenant set: give --quota SIZE, --max-images N or both", "--control", "/nonexistent/c.sock", "tenant", "set", "acme")]
    [InlineData("q2a ctl: limit set: give --export EXPORT or --tenant TENANT", "--control", "/nonexistent/c.sock", "limit", "set", "--iops", "1000")]
    [InlineData("q2a ctl: limit set: give --export EXPORT or --tenant TENANT, not both", "--control", "/nonexistent/c.sock", "limit", "set", "--export", "a/b", "--tenant", "a", "--iops", "1000")]
    [InlineData("q2a ctl: limit set: give at least one limit (--iops, --bps, ...); limit clear removes them", "--control", "/nonexistent/c.sock", "limit", "set", "--tenant", "a")]
    [InlineData("q2a ctl: limit clear: give --export EXPORT or --tenant TENANT", "--control", "/nonexistent/c.sock", "limit", "clear")]
    [InlineData("q2a ctl: --output must be 'human' or 'json', not 'yaml'", "--output", "yaml", "health")]
    [InlineData("q2a ctl: --control-port: '70000' is not a TCP port (1..65535)", "--control-port", "70000", "health")]
    [InlineData("q2a ctl: --control and --control-port name the same thing: give one of them", "--control", "/x.sock", "--control-port", "1", "health")]
    [InlineData("q2a ctl: --control-url: 'http://127.0.0.1:1' is not https://HOST:PORT (the control port is TLS only)", "--control-url", "http://127.0.0.1:1", "health")]
    [InlineData("q2a ctl: --control, --control-port and --control-url name the same thing: give one of them", "--control-port", "1", "--control-url", "https://127.0.0.1:1", "health")]
    [InlineData("q2a ctl: --token and --token-file name the same thing: give one of them", "--token", "t", "--token-file", "/t", "health")]
    [InlineData("q2a ctl: --cert needs --key", "--cert", "/c.pem", "health")]
    [InlineData("q2a ctl: --token-file: '/dev/null' is empty", "--token-file", "/dev/null", "health")]
    public async Task A_usage_error_is_one_line_and_exit_2(string expected, params string[] args) =>
        AssertOneLine(expected, await RunAsync(args));

    [Fact]
    public async Task A_socket_path_with_nothing_behind_it_is_named_in_one_line_and_exit_2()
    {
        var path = _dir.File("control.sock");
        AssertOneLine($"q2a ctl: cannot reach the host at control socket {path}: no such socket (is q2a host running?)",
            await RunAsync("--control", path, "tenant", "list"));
    }

    [Fact]
    public async Task A_socket_nobody_listens_on_is_refused_in_one_line_and_exit_2()
    {
        var path = _dir.File("stale.sock");
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(path)); // bound, never listening: what a host that died leaves behind looks like to a client
        Assert.True(File.Exists(path));
        AssertOneLine($"q2a ctl: cannot reach the host at control socket {path}: Connection refused",
            await RunAsync("--control", path, "health"));
    }

    [Fact]
    public async Task A_tcp_port_nobody_listens_on_is_named_in_one_line_and_exit_2()
    {
        int port;
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            port = ((IPEndPoint)listener.LocalEndpoint).Port;
        }
        AssertOneLine($"q2a ctl: cannot reach the host at control port 127.0.0.1:{port}: Connection refused",
            await RunAsync("--control-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "health"));
        AssertOneLine($"q2a ctl: cannot reach the host at control port 127.0.0.1:{port}: Connection refused",
            await RunAsync("--output", "json", "--control", $"127.0.0.1:{port}", "image", "list"));
    }

    [Theory]
    [InlineData("/run/q2a/control.sock", null, "/run/q2a/control.sock", null, 0)]
    [InlineData("ctl.sock", null, "ctl.sock", null, 0)]
    [InlineData("./odd:123", null, "./odd:123", null, 0)]
    [InlineData("localhost:7000", null, null, "localhost", 7000)]
    [InlineData("127.0.0.1:7001", null, null, "127.0.0.1", 7001)]
    [InlineData("[::1]:7002", null, null, "::1", 7002)]
    [InlineData(null, "7003", null, "127.0.0.1", 7003)]
    [InlineData(null, null, null, "127.0.0.1", 7004, "https://127.0.0.1:7004")]
    [InlineData(null, null, null, "host.example", 7005, "https://host.example:7005/")]
    public void Control_names_a_socket_path_or_a_tcp_host_and_port(string? control, string? port, string? socket, string? host, int tcpPort, string? url = null)
    {
        var endpoint = ControlEndpoint.From(control, port, url);
        Assert.Equal(socket, endpoint.SocketPath);
        Assert.Equal(host, endpoint.Host);
        Assert.Equal(tcpPort, endpoint.Port);
    }

    [Fact]
    public void Without_control_options_ctl_uses_the_hosts_default_socket()
    {
        Assert.Equal(Qcow2Actors.Host.ControlSocket.DefaultPath(), ControlEndpoint.From(null, null).SocketPath);
    }

    [Theory]
    [InlineData("1G", 1L << 30)]
    [InlineData("512M", 512L << 20)]
    [InlineData("1.5k", 1536L)]
    [InlineData("4096", 4096L)]
    [InlineData("0x1000", 4096L)]
    public void Sizes_take_qemu_suffixes(string text, long bytes) => Assert.Equal(bytes, CtlValues.Size(text, "SIZE"));

    [Fact]
    public void A_size_past_64_bits_signed_is_too_large() =>
        Assert.Equal("SIZE: size '8E' is too large", Assert.Throws<CtlUsageException>(() => CtlValues.Size("8E", "SIZE")).Message);
}
