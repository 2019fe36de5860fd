using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using Qcow2Actors.Host.Api.Contracts;

namespace Qcow2Actors.Cli.Commands.Ctl;

/// <summary>
/// HTTP/1.1 + JSON to the host's control API, over its Unix socket (a <see cref="SocketsHttpHandler.ConnectCallback"/>
/// that connects to the path whatever the URI says) or over TCP. A host that cannot be reached is a
/// <see cref="CtlUsageException"/> naming the socket or port; an error reply is a <see cref="CtlHostException"/>.
/// </summary>
internal sealed class ControlClient : IDisposable
{
    private readonly HttpClient _http;

    /// <summary>
    /// Connects (lazily, per request) to <paramref name="endpoint"/> (TCP: HTTPS) with <paramref name="credentials"/>;
    /// each request may take up to <paramref name="timeout"/>.
    /// </summary>
    public ControlClient(ControlEndpoint endpoint, TimeSpan timeout, ControlCredentials? credentials = null)
    {
        Endpoint = endpoint;
        credentials ??= new ControlCredentials();
        // Over the socket the URI names no address (only the Host header comes from it): the callback connects to the path.
        var baseAddress = endpoint.SocketPath is null ? new UriBuilder(Uri.UriSchemeHttps, endpoint.Host, endpoint.Port).Uri : new Uri("http://localhost/");
#pragma warning disable CA2000 // the client owns the handler (disposeHandler: true) and disposes it with itself
        _http = new HttpClient(CreateHandler(endpoint.SocketPath, credentials), disposeHandler: true);
#pragma warning restore CA2000
        _http.BaseAddress = baseAddress;
        _http.Timeout = timeout;
        if (credentials.Token is { } token)
            _http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
    }

    private static SocketsHttpHandler CreateHandler(string? socketPath, ControlCredentials credentials)
    {
        var handler = new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false };
        if (credentials.ClientCertificate is { } certificate) handler.SslOptions.ClientCertificates = [certificate];
        if (credentials.Authorities is not null)
        {
            // The host's chain is checked against --cacert alone (SslStream builds it so, fetching nothing); its name must still match.
            handler.SslOptions.CertificateChainPolicy = credentials.ChainPolicy();
            handler.SslOptions.CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
            handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, errors) =>
                (errors & ~System.Net.Security.SslPolicyErrors.RemoteCertificateChainErrors) == System.Net.Security.SslPolicyErrors.None
                && presented is System.Security.Cryptography.X509Certificates.X509Certificate2 c && credentials.Trusts(c);
        }
        if (socketPath is not null)
        {
            handler.ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        return handler;
    }

    /// <summary>Where the requests go.</summary>
    public ControlEndpoint Endpoint { get; }

    /// <summary>
    /// Sends <paramref name="method"/> <paramref name="path"/> with <paramref name="body"/> as JSON (when not null)
    /// and returns the reply's body text (empty for 204). Throws <see cref="CtlHostException"/> for an error
    /// reply and <see cref="CtlUsageException"/> when the host cannot be reached or does not answer in time.
    /// </summary>
    public async Task<string> SendAsync(HttpMethod method, string path, object? body = null, CancellationToken ct = default)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null) request.Content = JsonContent.Create(body, body.GetType(), options: HostJson.Options);
        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, ct).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            throw new CtlUsageException($"cannot reach the host at {Endpoint}: {Unreachable(e)}", e);
        }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new CtlUsageException($"the host at {Endpoint} did not answer {method} {path} in {_http.Timeout.TotalSeconds:0} s", e);
        }
        using (response)
        {
            string text;
            try
            {
                text = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                throw new CtlUsageException($"lost the connection to the host at {Endpoint}: {Reason(e)}", e);
            }
            if (!response.IsSuccessStatusCode) throw HostError(response.StatusCode, method, path, text);
            return text;
        }
    }

    /// <summary>Sends the request and deserializes the reply as <typeparamref name="T"/>; also returns the reply's text.</summary>
    public async Task<(T Reply, string Json)> SendAsync<T>(HttpMethod method, string path, object? body = null, CancellationToken ct = default)
    {
        var text = await SendAsync(method, path, body, ct).ConfigureAwait(false);
        return (Parse<T>(text, method, path), text);
    }

    private static T Parse<T>(string text, HttpMethod method, string path)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(text, HostJson.Options)
                ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new InvalidOperationException($"the host's reply to {method} {path} is not a {typeof(T).Name}: {e.Message}", e);
        }
    }

    /// <summary>The host's <see cref="ErrorReply"/>; a reply without one (a proxy, a route the host lacks) is named by its status.</summary>
    internal static CtlHostException HostError(HttpStatusCode status, HttpMethod method, string path, string text)
    {
        try
        {
            if (JsonSerializer.Deserialize<ErrorReply>(text, HostJson.Options) is { Code: { Length: > 0 } code, Message: { } message })
                return new CtlHostException(code, message.ReplaceLineEndings(" "));
        }
        catch (JsonException)
        {
            // not an ErrorReply: fall through to the status line
        }
        return new CtlHostException($"http-{(int)status}", $"the host answered {(int)status} {status} to {method} {path}");
    }

    // Why connecting failed: a socket path with no file behind it says so (the runtime calls it "Cannot assign
    // requested address"); otherwise the system's reason, e.g. "Connection refused".
    private string Unreachable(HttpRequestException e) =>
        Endpoint.SocketPath is { } path && !File.Exists(path) ? "no such socket (is q2a host running?)" : Reason(e);

    // The innermost reason, e.g. "Connection refused".
    private static string Reason(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e.Message.ReplaceLineEndings(" ");
    }

    /// <inheritdoc/>
    public void Dispose() => _http.Dispose();
}
