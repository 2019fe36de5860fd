using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine;
using Qcow2Actors.Engine.Create;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>
/// serve's start-up warm-up: it runs real NBD requests through a throwaway image on serve's own host, checks what
/// it reads back, cleans up after itself, and can only ever cost a line on stderr, never the server; a stop during
/// it means serve never listens.
/// </summary>
public sealed class ServeWarmUpTests : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private ImageHost _host = null!;

    public Task InitializeAsync()
    {
        _host = ImageHost.Create();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        _dir.Dispose();
    }

    private static string[] LeftOver() => Directory.GetDirectories(Path.GetTempPath(), ServeWarmUp.DirectoryPrefix + "*");

    [Fact]
    public void Warm_up_is_wanted_only_when_precompiled_code_is_off()
    {
        Assert.True(ServeWarmUp.Wanted(name => name == "DOTNET_ReadyToRun" ? "0" : null));
        Assert.True(ServeWarmUp.Wanted(name => name == "COMPlus_ReadyToRun" ? "0" : null));
        Assert.False(ServeWarmUp.Wanted(_ => null));
        Assert.False(ServeWarmUp.Wanted(name => name == "DOTNET_ReadyToRun" ? "1" : null));
        // The newer spelling wins, as in the runtime.
        Assert.False(ServeWarmUp.Wanted(name => name == "DOTNET_ReadyToRun" ? "1" : name == "COMPlus_ReadyToRun" ? "0" : null));
    }

    [Theory]
    [InlineData(CacheMode.Writeback)]
    [InlineData(CacheMode.None)] // O_DIRECT where the temporary directory allows it, writeback where not (tmpfs)
    public async Task Warm_up_reads_back_what_it_wrote_and_leaves_no_directory(CacheMode cache)
    {
        var stderr = new StringWriter();

        bool ran = await ServeWarmUp.RunAsync(_host, cache, stderr, CancellationToken.None);

        Assert.True(ran);
        Assert.Equal("", stderr.ToString());
        Assert.Empty(LeftOver());
    }

    [Fact]
    public async Task Warm_up_that_cannot_open_its_image_is_one_stderr_line_and_no_exception()
    {
        var stderr = new StringWriter();
        await _host.DisposeAsync(); // the host is gone: opening the throwaway image fails

        bool ran = await ServeWarmUp.RunAsync(_host, CacheMode.Writeback, stderr, CancellationToken.None);

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

        bool ran = await ServeWarmUp.RunAsync(_host, CacheMode.Writeback, stderr, new CancellationToken(canceled: true));

        Assert.False(ran);
        Assert.Equal("", stderr.ToString());
        Assert.Empty(LeftOver());
    }

    [Fact]
    public async Task Warm_up_past_its_time_limit_is_one_line_naming_the_limit()
    {
        var stderr = new StringWriter();
        var time = new FakeTimeProvider();

        var running = ServeWarmUp.RunAsync(_host, CacheMode.Writeback, stderr, CancellationToken.None, time);
        time.Advance(ServeWarmUp.TimeLimit); // the limit is set when the call starts: it has passed before any request is answered
        bool ran = await running;

        Assert.False(ran);
        Assert.Equal($"q2a serve: start-up warm-up skipped: not done within {ServeWarmUp.TimeLimit.TotalSeconds:0} s",
            Assert.Single(stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)).TrimEnd('\r'));
        Assert.Empty(LeftOver());
    }

    [Fact]
    public async Task Serve_stopped_during_its_warm_up_exits_0_without_opening_its_image_or_listening()
    {
        var image = _dir.File("disk.qcow2");
        ImageCreator.Create(image, new Qcow2CreateOptions { Size = 4 * 1024 * 1024 });
        var settings = ServeSettings.From([image], null, 0, null, null, false, null, null, null);
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        int exit = await ServeCommand.RunAsync(settings, stdout, stderr, Task.CompletedTask, warmUp: true);

        Assert.Equal(0, exit);
        Assert.Equal("", stdout.ToString()); // no "Serving" line: nothing was bound
        Assert.Equal("", stderr.ToString());
        Assert.Empty(LeftOver());
        // Never opened, so never locked: another writer takes it at once.
        await using var again = await _host.OpenAsync(image, new Qcow2OpenOptions { ReadOnly = false });
    }
}
