using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Tls;

/// <summary>
/// Certificates made with gnutls' certtool, laid out in the directories QEMU and libnbd read: a CA; the server's
/// directory (ca-cert.pem, server-cert.pem, server-key.pem, for 127.0.0.1 and localhost); client directories
/// (ca-cert.pem, client-cert.pem, client-key.pem) for acme (CN=acme-vm1,O=Acme) and globex
/// (CN=globex-vm1,O=Globex, SAN vm1.globex.example); one whose client certificate another CA signed; and one
/// with no client certificate at all.
/// </summary>
internal sealed class CertToolPki
{
    public string ServerDir { get; }
    public string AcmeDir { get; }
    public string GlobexDir { get; }
    public string StrangerDir { get; }
    public string NoCertDir { get; }

    public const string AcmeSubject = "CN=acme-vm1,O=Acme";
    public const string GlobexSan = "vm1.globex.example";

    public CertToolPki(string root)
    {
        var work = Directory.CreateDirectory(Path.Combine(root, "pki")).FullName;
        var ca = Authority(work, "ca", "Q2A Test CA");
        var other = Authority(work, "other-ca", "Somebody Else's CA");

        ServerDir = Dir(root, "server");
        Copy(ca.Cert, ServerDir, "ca-cert.pem");
        Issue(work, ca, "server", "organization = \"Q2A\"\ncn = \"localhost\"\ndns_name = \"localhost\"\nip_address = \"127.0.0.1\"\ntls_www_server\n",
            Path.Combine(ServerDir, "server-cert.pem"), Path.Combine(ServerDir, "server-key.pem"));

        AcmeDir = Client(root, work, ca, ca, "acme", "organization = \"Acme\"\ncn = \"acme-vm1\"\n");
        GlobexDir = Client(root, work, ca, ca, "globex", $"organization = \"Globex\"\ncn = \"globex-vm1\"\ndns_name = \"{GlobexSan}\"\n");
        StrangerDir = Client(root, work, ca, other, "stranger", "organization = \"Acme\"\ncn = \"acme-vm1\"\n");
        NoCertDir = Dir(root, "nocert");
        Copy(ca.Cert, NoCertDir, "ca-cert.pem");
    }

    private sealed record Ca(string Cert, string Key);

    private static string Dir(string root, string name) => Directory.CreateDirectory(Path.Combine(root, name)).FullName;

    private static void Copy(string file, string dir, string name) => File.Copy(file, Path.Combine(dir, name));

    private static string Client(string root, string work, Ca trusted, Ca issuer, string name, string template)
    {
        var dir = Dir(root, name);
        Copy(trusted.Cert, dir, "ca-cert.pem"); // whom the client trusts for the server
        Issue(work, issuer, name, template + "tls_www_client\n", Path.Combine(dir, "client-cert.pem"), Path.Combine(dir, "client-key.pem"));
        return dir;
    }

    private static Ca Authority(string work, string name, string cn)
    {
        var key = Path.Combine(work, name + "-key.pem");
        var cert = Path.Combine(work, name + "-cert.pem");
        var template = Path.Combine(work, name + ".info");
        File.WriteAllText(template, $"cn = \"{cn}\"\nca\ncert_signing_key\nexpiration_days = 30\n");
        Run("--generate-privkey", "--key-type=rsa", "--sec-param=medium", "--outfile", key);
        Run("--generate-self-signed", "--load-privkey", key, "--template", template, "--outfile", cert);
        return new Ca(cert, key);
    }

    private static void Issue(string work, Ca ca, string name, string template, string certOut, string keyOut)
    {
        var info = Path.Combine(work, name + ".info");
        File.WriteAllText(info, template + "signing_key\nencryption_key\nexpiration_days = 30\n");
        Run("--generate-privkey", "--key-type=rsa", "--sec-param=medium", "--outfile", keyOut);
        Run("--generate-certificate", "--load-privkey", keyOut, "--load-ca-certificate", ca.Cert, "--load-ca-privkey", ca.Key,
            "--template", info, "--outfile", certOut);
    }

    private static void Run(params string[] args)
    {
        var r = QemuTools.Run("certtool", args);
        if (r.ExitCode != 0) throw new InvalidOperationException($"certtool {string.Join(' ', args)}: exit {r.ExitCode}\n{r.StdErr}");
    }
}
