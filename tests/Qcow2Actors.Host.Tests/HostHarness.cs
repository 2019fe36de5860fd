using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Host.Config;
using Qcow2Actors.Host.Hosting;
using Qcow2Actors.Host.Registry;

namespace Qcow2Actors.Host.Tests;

/// <summary>
/// An in-process q2a host on a data dir and a control socket of its own (NBD on a free loopback port),
/// with an HttpClient that talks to the control API over the Unix socket.
/// </summary>
internal sealed class HostHarness : IAsyncDisposable
{
    private HostHarness(string dataDir, string socket, WebApplication app)
    {
        DataDir = dataDir;
        Socket = socket;
        App = app;
        Client = ClientFor(socket);
    }

    public string DataDir { get; }
    public string Socket { get; }
    public WebApplication App { get; }
    public HttpClient Client { get; }
    public HostRegistry Registry => App.Services.GetRequiredService<HostRegistry>();
    private bool _stopped;

    /// <summary>
    /// Starts a host on <paramref name="dataDir"/>; <paramref name="config"/> is HOCON written to a file beside it,
    /// <paramref name="controlPort"/> the TCP control port (TLS: the config must say how), <paramref name="services"/>
    /// the last say on the host's services.
    /// </summary>
    public static async Task<HostHarness> StartAsync(string dataDir, string? config = null, int? controlPort = null,
        Action<IServiceCollection>? services = null)
    {
        var socket = Path.Combine(dataDir, "control.sock");
        string? configFile = null;
        if (config is not null)
        {
            configFile = Path.Combine(dataDir, "host.conf");
            await File.WriteAllTextAsync(configFile, config);
        }
        var settings = HostSettings.Load(configFile, dataDir: Path.Combine(dataDir, "data"), controlSocket: socket, controlPort: controlPort, nbdPort: 0);
        var app = HostApplication.Build(settings, logging => logging.ClearProviders(), services);
        await app.StartAsync();
        return new HostHarness(settings.DataDir, socket, app);
    }

    /// <summary>A client of the control socket that sends <paramref name="token"/> as its bearer token.</summary>
    public HttpClient ClientWithToken(string token)
    {
        var client = ClientFor(Socket);
        client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    /// <summary>The audit log's lines so far, parsed.</summary>
    public IReadOnlyList<JsonElement> AuditLines()
    {
        using var file = new FileStream(Path.Combine(DataDir, "audit.log"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        using var reader = new StreamReader(file);
        var lines = new List<JsonElement>();
        while (reader.ReadLine() is { } line) lines.Add(JsonDocument.Parse(line).RootElement.Clone());
        return lines;
    }

    public static HttpClient ClientFor(string socket) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, ct) =>
        {
            var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await s.ConnectAsync(new UnixDomainSocketEndPoint(socket), ct);
            return new NetworkStream(s, ownsSocket: true);
        },
    })
    { BaseAddress = new Uri("http://localhost"), Timeout = TimeSpan.FromSeconds(60) };

    public string ImagePath(string tenant, string image) => Path.Combine(DataDir, tenant, image + ".qcow2");

    public async Task<T> PostAsync<T>(string path, object body, HttpStatusCode expected = HttpStatusCode.Created)
    {
        using var response = await Client.PostAsJsonAsync(path, body, HostJson.Options);
        return await ReadAsync<T>(response, expected);
    }

    public async Task<T> PostAsync<T>(string path) => await ReadAsync<T>(await Client.PostAsync(path, null), HttpStatusCode.OK);

    public async Task<T> GetAsync<T>(string path) => await ReadAsync<T>(await Client.GetAsync(path), HttpStatusCode.OK);

    /// <summary>The error a request was refused with; fails when it was not refused with <paramref name="status"/>.</summary>
    public static async Task<ErrorReply> ErrorAsync(Task<HttpResponseMessage> request, HttpStatusCode status)
    {
        using var response = await request;
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        var error = JsonSerializer.Deserialize<ErrorReply>(text, HostJson.Options)!;
        Assert.DoesNotContain("\n", error.Message);
        return error;
    }

    private static async Task<T> ReadAsync<T>(HttpResponseMessage response, HttpStatusCode expected)
    {
        using (response)
        {
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == expected, $"expected {(int)expected}, got {(int)response.StatusCode}: {text}");
            return JsonSerializer.Deserialize<T>(text, HostJson.Options)!;
        }
    }

    /// <summary>Stops the host (NBD server, every image closed) and says whether every image closed clean.</summary>
    public async Task<bool> StopAsync()
    {
        if (!_stopped)
        {
            _stopped = true;
            await App.StopAsync();
        }
        return Registry.StoppedClean;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        Client.Dispose();
        await App.DisposeAsync();
    }
}
