using System.Net;
using System.Net.Sockets;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>
/// serve's start-up warm-up: it runs real NBD requests through a throwaway image on serve's own host, checks what
/// it reads back, cleans up after itself, and can only ever cost a line on stderr, never the server.
/// </summary>
public sealed class ServeWarmUpTests : IAsyncLifetime
{
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _host.DisposeAsync();

    private static string[] LeftOver() => Directory.GetDirectories(Path.GetTempPath(), ServeWarmUp.DirectoryPrefix + "*");

    public static TheoryData<string> Sockets => ["tcp", "unix"];

    private static EndPoint ServerEndPoint(string kind) =>
        kind == "unix" ? new UnixDomainSocketEndPoint("/run/unused.sock") : new IPEndPoint(IPAddress.Loopback, 10809);

    [Fact]
    public void Warm_up_is_wanted_only_when_precompiled_code_is_off()
    {
        Assert.True(ServeWarmUp.Wanted(name => name == "DOTNET_ReadyToRun" ? "0" : null));
        Assert.False(ServeWarmUp.Wanted(_ => null));
        Assert.False(ServeWarmUp.Wanted(name => name == "DOTNET_ReadyToRun" ? "1" : null));
    }

    [Theory]
    [MemberData(nameof(Sockets))]
    public async Task Warm_up_reads_back_what_it_wrote_over_the_servers_kind_of_socket_and_leaves_no_directory(string kind)
    {
        var stderr = new StringWriter();

        bool ran = await ServeWarmUp.RunAsync(_host, CacheMode.Writeback, ServerEndPoint(kind), stderr, CancellationToken.None);

        Assert.True(ran);
        Assert.Equal("", stderr.ToString());
        Assert.Empty(LeftOver());
    }

    [Fact]
    public async Task Warm_up_with_the_page_cache_off_runs_like_the_first_export()
    {
        // The temporary directory is on ext4 here (O_DIRECT works); on tmpfs this is the one-line skip below.
        var stderr = new StringWriter();

        bool ran = await ServeWarmUp.RunAsync(_host, CacheMode.None, ServerEndPoint("tcp"), stderr, CancellationToken.None);

        Assert.True(ran);
        Assert.Equal("", stderr.ToString());
        Assert.Empty(LeftOver());
    }

    [Fact]
    public async Task Warm_up_that_cannot_open_its_image_is_one_stderr_line_and_no_exception()
    {
        var stderr = new StringWriter();
        await _host.DisposeAsync(); // the host is gone: opening the throwaway image fails

        bool ran = await ServeWarmUp.RunAsync(_host, CacheMode.Writeback, ServerEndPoint("tcp"), stderr, CancellationToken.None);

        Assert.False(ran);
        var line = Assert.Single(stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("q2a serve: start-up warm-up skipped: ", line, StringComparison.Ordinal);
        Assert.Empty(LeftOver());
        _host = ImageHost.Create(); // for DisposeAsync
    }

    [Fact]
    public async Task Warm_up_cut_short_by_a_stop_says_nothing_and_leaves_no_directory()
    {
        var stderr = new StringWriter();

        bool ran = await ServeWarmUp.RunAsync(_host, CacheMode.Writeback, ServerEndPoint("tcp"), stderr, new CancellationToken(canceled: true));

        Assert.False(ran);
        Assert.Equal("", stderr.ToString());
        Assert.Empty(LeftOver());
    }
}
