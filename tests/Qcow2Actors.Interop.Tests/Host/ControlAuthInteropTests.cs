using System.Globalization;
using System.Text.Json;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Host;

/// <summary>A fact that needs certtool (gnutls-bin); skips with the reason when it is absent outside CI.</summary>
public sealed class CerttoolFactAttribute : FactAttribute
{
    public CerttoolFactAttribute() { Skip = QemuTools.SkipReason("certtool"); }
}

/// <summary>
/// <c>q2a host</c> with its control port on TLS, driven by <c>q2a ctl</c> out of process with certificates certtool
/// made: an operator by client certificate and by token file, a tenant token confined to its tenant, refusals
/// as one line and exit 1, and the audit log naming who did what.
/// </summary>
public sealed class ControlAuthInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [CerttoolFact]
    public async Task Ctl_over_tls_works_with_an_operator_certificate_or_token_and_confines_a_tenant_token()
    {
        var pki = Directory.CreateDirectory(_dir.File("pki")).FullName;
        string P(string name) => Path.Combine(pki, name);
        void Certtool(params string[] args) => QemuTools.Run("certtool", args).EnsureSuccess();
        File.WriteAllText(P("ca.info"), "cn = q2a interop CA\nca\ncert_signing_key\nexpiration_days = 2\n");
        File.WriteAllText(P("server.info"), "cn = 127.0.0.1\nip_address = 127.0.0.1\ntls_www_server\nsigning_key\nencryption_key\nexpiration_days = 2\n");
        File.WriteAllText(P("ops.info"), "cn = ops\norganization = Q2A Interop\ntls_www_client\nsigning_key\nexpiration_days = 2\n");
        foreach (var name in new[] { "ca", "server", "ops" }) Certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", P(name + "-key.pem"));
        Certtool("--generate-self-signed", "--load-privkey", P("ca-key.pem"), "--template", P("ca.info"), "--outfile", P("ca-cert.pem"));
        foreach (var name in new[] { "server", "ops" })
            Certtool("--generate-certificate", "--load-privkey", P(name + "-key.pem"), "--load-ca-certificate", P("ca-cert.pem"),
                "--load-ca-privkey", P("ca-key.pem"), "--template", P(name + ".info"), "--outfile", P(name + "-cert.pem"));
        File.WriteAllText(P("ops.token"), "interop-operator-token-0123456789\n");
        var config = _dir.File("host.conf");
        File.WriteAllText(config, $$"""
            qcow2actors.host.control {
              tls { cert = "{{P("server-cert.pem")}}", key = "{{P("server-key.pem")}}", ca = "{{P("ca-cert.pem")}}" }
              operators.ops { subject = "CN=ops,O=Q2A Interop", token-file = "{{P("ops.token")}}" }
            }
            """);
        var port = HostProcess.FreePort().ToString(CultureInfo.InvariantCulture);

        using var host = await HostProcess.StartAsync(_dir.Path, "--config", config, "--control-port", port);
        string[] url = ["ctl", "--control-url", $"https://127.0.0.1:{port}", "--cacert", P("ca-cert.pem")];
        string[] byCertificate = [.. url, "--cert", P("ops-cert.pem"), "--key", P("ops-key.pem")];
        string[] byTokenFile = [.. url, "--token-file", P("ops.token")];

        Ok([.. byCertificate, "tenant", "add", "acme"]);
        Ok([.. byTokenFile, "tenant", "add", "globex"]);
        Ok([.. byTokenFile, "image", "create", "globex", "disk", "1M"]);
        using var created = JsonDocument.Parse(Ok([.. byCertificate, "--output", "json", "token", "create", "acme"]));
        var token = created.RootElement.GetProperty("token").GetString()!;
        string[] asTenant = [.. url, "--token", token];

        Ok([.. asTenant, "image", "create", "acme", "disk", "1M"]);
        Assert.Contains("acme", Ok([.. asTenant, "image", "list"]));
        Assert.DoesNotContain("globex", Ok([.. asTenant, "image", "list"]));
        Refused("tenant-not-found", [.. asTenant, "image", "info", "globex", "disk"]);
        Refused("forbidden", [.. asTenant, "tenant", "add", "mine"]);
        Refused("unauthorized", [.. url, "health"]);

        Ok([.. byCertificate, "tenant", "revoke", "acme"]);
        Refused("forbidden", [.. asTenant, "image", "list"]);

        var audit = File.ReadAllLines(Path.Combine(host.DataDir, "audit.log")).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Contains(audit, l => l.GetProperty("who").GetString() == "operator:ops" && l.GetProperty("route").GetString() == "/v1/tenants/{tenant}/revoke");
        Assert.Contains(audit, l => l.GetProperty("who").GetString()!.StartsWith("tenant:acme/", StringComparison.Ordinal) && l.GetProperty("status").GetInt32() == 403);
        Assert.Equal(0, host.Stop());
    }

    [Fact]
    public void A_control_port_without_tls_refuses_to_start_with_one_line_naming_the_key()
    {
        var r = QemuTools.Q2a("host", "--data-dir", _dir.File("data"), "--control", _dir.File("c.sock"), "--control-port", "1", "--port", "0");
        Assert.NotEqual(0, r.ExitCode);
        Assert.StartsWith("q2a: qcow2actors.host.control.tls.cert is not set", r.StdErr);
        Assert.Single(r.StdErr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    private static string Ok(params string[] args)
    {
        var r = QemuTools.Q2a(args);
        Assert.True(r.ExitCode == 0, $"q2a {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StdErr}{r.StdOut}");
        return r.StdOut;
    }

    private static void Refused(string code, params string[] args)
    {
        var r = QemuTools.Q2a(args);
        Assert.Equal(1, r.ExitCode);
        Assert.Matches($"^q2a ctl: [^\\n]+ \\({code}\\)\\r?\\n$", r.StdErr);
    }
}
