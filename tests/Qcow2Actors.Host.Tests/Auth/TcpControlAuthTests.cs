using System.Net;
using System.Net.Http.Json;
using Qcow2Actors.Host.Api;
using Qcow2Actors.Host.Api.Contracts;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Host.Tests.Auth;

/// <summary>The TCP control port: TLS only, and every request needs an operator's client certificate or a bearer token.</summary>
public class TcpControlAuthTests
{
    [Fact]
    public async Task The_tcp_port_admits_operator_certificates_and_tokens_and_answers_401_without_credentials()
    {
        using var dir = new TempDir();
        var certs = new TestCertificates(dir.File("pki"));
        certs.Issue("ops", "CN=ops,O=Q2A Test");
        certs.Issue("stranger", "CN=stranger,O=Q2A Test");
        var rogue = new TestCertificates(dir.File("rogue"), "CN=rogue CA");
        rogue.Issue("ops", "CN=ops,O=Q2A Test"); // the right subject from the wrong CA
        const string OperatorToken = "operator-token-0123456789abcdef";
        File.WriteAllText(dir.File("ops.token"), OperatorToken + "\n");
        int port = TestCertificates.FreePort();
        await using var host = await HostHarness.StartAsync(dir.Path, certs.HostConfig($$"""
            operators {
              alice { subject = "CN=ops, O=Q2A Test" }
              bob { token-file = "{{dir.File("ops.token")}}" }
            }
            """), controlPort: port);

        using (var anonymous = certs.Client(port))
        {
            var refused = await HostHarness.ErrorAsync(anonymous.GetAsync(Routes.Tenants), HttpStatusCode.Unauthorized);
            Assert.Equal(ErrorCodes.Unauthorized, refused.Code);
        }
        using (var wrong = certs.Client(port, token: "not-a-token"))
            await HostHarness.ErrorAsync(wrong.GetAsync(Routes.Tenants), HttpStatusCode.Unauthorized);
        using (var stranger = certs.Client(port, client: "stranger"))
        {
            var refused = await HostHarness.ErrorAsync(stranger.GetAsync(Routes.Tenants), HttpStatusCode.Forbidden);
            Assert.Contains("'CN=stranger, O=Q2A Test'", refused.Message);
        }
        using (var forged = certs.Client(port, client: "ops", issuer: rogue))
            await Assert.ThrowsAsync<HttpRequestException>(() => forged.GetAsync(Routes.Tenants)); // the handshake fails

        using var byCertificate = certs.Client(port, client: "ops");
        using (var created = await byCertificate.PostAsJsonAsync(Routes.Tenants, new TenantCreateRequest { Name = "acme" }, HostJson.Options))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        using var byToken = certs.Client(port, token: OperatorToken);
        using (var created = await byToken.PostAsJsonAsync(Routes.TenantImagesPath("acme"), new ImageCreateRequest { Name = "disk", Size = 1 << 20 }, HostJson.Options))
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        using (var limit = await byToken.PutAsJsonAsync(Routes.TenantLimitPath("acme"), new LimitRequest { Iops = 100 }, HostJson.Options))
            Assert.Equal(HttpStatusCode.OK, limit.StatusCode);
        using (var health = await byToken.GetAsync(Routes.Health)) Assert.Equal(HttpStatusCode.OK, health.StatusCode);

        var who = host.AuditLines().Select(l => (Who: l.GetProperty("who").GetString(), Status: l.GetProperty("status").GetInt32())).ToList();
        Assert.Contains(("anonymous:127.0.0.1", 401), who);
        Assert.Contains(("cert:CN=stranger, O=Q2A Test", 403), who);
        Assert.Contains(("operator:alice", 201), who);
        Assert.Contains(("operator:bob", 201), who);
    }

    [Fact]
    public async Task A_client_certificate_from_another_ca_is_refused_without_fetching_its_aia_url()
    {
        using var dir = new TempDir();
        var certs = new TestCertificates(dir.File("pki"));
        using var lure = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        lure.Start();
        int lurePort = ((IPEndPoint)lure.LocalEndpoint).Port;
        var rogue = new TestCertificates(dir.File("rogue"), "CN=rogue CA");
        rogue.Issue("ops", "CN=ops,O=Q2A Test", caIssuers: $"http://127.0.0.1:{lurePort}/rogue-ca.cer");
        int port = TestCertificates.FreePort();
        await using var host = await HostHarness.StartAsync(dir.Path, certs.HostConfig("""operators { alice { subject = "CN=ops, O=Q2A Test" } }"""), controlPort: port);

        using (var forged = certs.Client(port, client: "ops", issuer: rogue))
            await Assert.ThrowsAsync<HttpRequestException>(() => forged.GetAsync(Routes.Tenants));
        // The host decided before the client saw the refusal: a fetch would have left a connection in the backlog.
        Assert.False(lure.Pending(), "the host connected to the certificate's caIssuers URL");
    }
}
