using System.Globalization;
using Qcow2Actors.Interop.Tests.Host;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Tls;

/// <summary>A fact that needs certtool besides qemu's, libnbd's and fio's tools.</summary>
public sealed class TlsFactAttribute : FactAttribute
{
    public TlsFactAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io", "nbdinfo", "nbdcopy", "fio", "certtool"); }
}

/// <summary>
/// NBD over TLS with real clients and certificates certtool made: <c>q2a host</c> (out of process) maps each
/// client certificate to its tenant, and libnbd (nbdinfo, nbdcopy, fio's nbd engine) and QEMU's NBD client
/// see, read and write only that tenant's exports; clients without a certificate, with one another CA signed,
/// or in plain text are refused.
/// </summary>
public sealed class NbdTlsInteropTests : IDisposable
{
    private const int MiB = 1024 * 1024;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Nbds(int port, string export, string certificates) =>
        string.Create(CultureInfo.InvariantCulture, $"nbds://127.0.0.1:{port}/{export}?tls-certificates={certificates}");

    private static QemuTools.Result QemuIo(int port, string export, string certificates, params string[] commands)
    {
        var args = new List<string>
        {
            "--object", $"tls-creds-x509,id=tls0,dir={certificates},endpoint=client",
            "--image-opts", string.Create(CultureInfo.InvariantCulture, $"driver=nbd,host=127.0.0.1,port={port},export={export},tls-creds=tls0"),
        };
        foreach (var c in commands) { args.Add("-c"); args.Add(c); }
        return QemuTools.Run("qemu-io", args);
    }

    private async Task<(HostProcess Host, CertToolPki Pki)> StartTenantHostAsync()
    {
        var pki = new CertToolPki(_dir.Path);
        var config = _dir.File("host.conf");
        File.WriteAllText(config, $$"""
            qcow2actors.host {
              nbd.tls { mode = required, x509-dir = "{{pki.ServerDir}}" }
              tenants {
                acme { identities = ["{{CertToolPki.AcmeSubject}}"] }
                globex { identities = ["{{CertToolPki.GlobexSan}}"] }
              }
            }
            """);
        var host = await HostProcess.StartAsync(_dir.Path, "--config", config);
        foreach (var (tenant, image) in new[] { ("acme", "a1"), ("acme", "a2"), ("globex", "g1") })
        {
            host.CtlOk("image", "create", tenant, image, "16M");
            host.CtlOk("export", "add", tenant, image, "--name", image);
        }
        return (host, pki);
    }

    [TlsFact]
    public async Task Each_tenant_lists_reads_and_writes_only_its_own_exports_over_tls_and_strangers_are_refused()
    {
        var (host, pki) = await StartTenantHostAsync();
        using var _ = host;
        int port = host.NbdPort;

        // nbdinfo --list: each tenant sees its own exports only (acme by subject, globex by SAN).
        var acmeList = QemuTools.Run("nbdinfo", "--list", Nbds(port, "", pki.AcmeDir));
        Assert.True(acmeList.ExitCode == 0, acmeList.StdErr);
        Assert.Contains("export=\"a1\"", acmeList.StdOut);
        Assert.Contains("export=\"a2\"", acmeList.StdOut);
        Assert.DoesNotContain("g1", acmeList.StdOut);
        var globexList = QemuTools.Run("nbdinfo", "--list", Nbds(port, "", pki.GlobexDir));
        Assert.True(globexList.ExitCode == 0, globexList.StdErr);
        Assert.Contains("export=\"g1\"", globexList.StdOut);
        Assert.DoesNotContain("a1", globexList.StdOut);

        // QEMU's client writes and reads back its own export (the exit code: -P mismatches still print "read N/N").
        var own = QemuIo(port, "a1", pki.AcmeDir, "write -P 0xa5 0 1M", "read -P 0xa5 0 1M");
        Assert.True(own.ExitCode == 0, $"qemu-io on its own export: exit {own.ExitCode}\n{own.StdOut}{own.StdErr}");
        Assert.DoesNotContain("Pattern verification failed", own.StdOut + own.StdErr);
        // ... and the other tenant's export is refused, as one that does not exist.
        var other = QemuIo(port, "g1", pki.AcmeDir, "read 0 4k");
        Assert.NotEqual(0, other.ExitCode);
        var missing = QemuIo(port, "no-such-export", pki.AcmeDir, "read 0 4k");
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Equal(missing.StdErr.Replace("no-such-export", "g1"), other.StdErr);

        // Refused: no client certificate, a certificate another CA signed, plain text.
        Assert.NotEqual(0, QemuTools.Run("nbdinfo", Nbds(port, "a1", pki.NoCertDir)).ExitCode);
        Assert.NotEqual(0, QemuTools.Run("nbdinfo", Nbds(port, "a1", pki.StrangerDir)).ExitCode);
        var plain = QemuTools.Run("nbdinfo", string.Create(CultureInfo.InvariantCulture, $"nbd://127.0.0.1:{port}/a1"));
        Assert.NotEqual(0, plain.ExitCode);
        Assert.True(host.Stop() == 0, host.Output);
        QemuTools.AssertCheckClean(host.ImagePath("acme", "a1"));
        QemuTools.AssertCheckClean(host.ImagePath("globex", "g1"));
    }

    [TlsFact]
    public async Task Nbdcopy_and_fio_move_data_over_tls_and_verify_it()
    {
        var (host, pki) = await StartTenantHostAsync();
        using var _ = host;
        int port = host.NbdPort;

        var source = _dir.File("source.raw");
        var back = _dir.File("back.raw");
        var data = new byte[16 * MiB];
        new Random(10).NextBytes(data);
        File.WriteAllBytes(source, data);
        var up = QemuTools.Run("nbdcopy", source, Nbds(port, "a2", pki.AcmeDir));
        Assert.True(up.ExitCode == 0, $"nbdcopy to the export: {up.StdErr}");
        var down = QemuTools.Run("nbdcopy", Nbds(port, "a2", pki.AcmeDir), back);
        Assert.True(down.ExitCode == 0, $"nbdcopy from the export: {down.StdErr}");
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(back)), "nbdcopy round trip over TLS changed the data");

        // fio's nbd engine writes with checksums, then reads everything back and verifies it, over TLS.
        // libnbd refuses a tls-certificates file path in a URI unless the program allows it, which fio does
        // not: it finds the certificates in libnbd's default directory, $HOME/.pki/libnbd, instead.
        var home = _dir.File("fio-home");
        var defaultDir = Directory.CreateDirectory(Path.Combine(home, ".pki", "libnbd")).FullName;
        foreach (var file in Directory.GetFiles(pki.GlobexDir)) File.Copy(file, Path.Combine(defaultDir, Path.GetFileName(file)));
        var job = _dir.File("verify.fio");
        File.WriteAllText(job, $"""
            [global]
            ioengine=nbd
            uri={string.Create(CultureInfo.InvariantCulture, $"nbds://127.0.0.1:{port}/g1")}
            rw=randwrite
            bs=64k
            size=8m
            iodepth=8
            verify=crc32c
            do_verify=1
            verify_fatal=1
            verify_state_save=0
            [job]

            """);
        // For root libnbd looks in /etc/pki/libnbd rather than $HOME: run fio as nobody then, with the test's
        // directories readable to it (test certificates only).
        string[] asUser = [];
        if (!OperatingSystem.IsWindows() && Environment.UserName == "root")
        {
            foreach (var d in new[] { _dir.Path, home, Path.Combine(home, ".pki"), defaultDir })
                File.SetUnixFileMode(d, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            foreach (var f in Directory.GetFiles(defaultDir).Append(job))
                File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            asUser = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
        }
        var fio = asUser.Length > 0
            ? QemuTools.Run(asUser[0], [.. asUser[1..], "env", $"HOME={home}", "fio", "--directory=" + home, job])
            : QemuTools.Run("env", $"HOME={home}", "fio", job);
        Assert.True(fio.ExitCode == 0, $"fio over TLS: exit {fio.ExitCode}\n{fio.StdOut}{fio.StdErr}\n{host.Output}");
        Assert.DoesNotContain("verify failed", fio.StdOut + fio.StdErr);

        Assert.True(host.Stop() == 0, host.Output);
        QemuTools.AssertCheckClean(host.ImagePath("acme", "a2"));
        QemuTools.AssertCheckClean(host.ImagePath("globex", "g1"));
    }

    [TlsFact]
    public async Task Serve_with_tls_authz_serves_the_listed_subject_only()
    {
        var pki = new CertToolPki(_dir.Path);
        var image = _dir.File("disk.qcow2");
        QemuTools.QemuImg("create", "-f", "qcow2", image, "16M").EnsureSuccess();
        using var serve = await ServeProcess.StartAsync(1, "--port", "0", "--tls-creds", pki.ServerDir, "--tls-authz", CertToolPki.AcmeSubject, image);
        Assert.StartsWith("nbds://", serve.Uri);
        int port = new Uri(serve.Uri).Port;

        var acme = QemuIo(port, "disk.qcow2", pki.AcmeDir, "write -P 0x3c 0 64k", "read -P 0x3c 0 64k");
        Assert.True(acme.ExitCode == 0, $"qemu-io as the listed subject: exit {acme.ExitCode}\n{acme.StdOut}{acme.StdErr}");
        Assert.NotEqual(0, QemuIo(port, "disk.qcow2", pki.GlobexDir, "read 0 4k").ExitCode); // signed by the CA, but not listed
        Assert.NotEqual(0, QemuTools.Run("nbdinfo", string.Create(CultureInfo.InvariantCulture, $"nbd://127.0.0.1:{port}/disk.qcow2")).ExitCode);
        Assert.Equal(0, serve.Stop());
        QemuTools.AssertCheckClean(image);
    }

    [Fact]
    public void Serve_names_a_bad_tls_option_or_file_in_one_line()
    {
        var image = _dir.File("x.qcow2");
        var noDir = QemuTools.Q2a("serve", "--port", "0", "--tls-creds", _dir.File("nowhere"), image);
        Assert.Equal(1, noDir.ExitCode);
        Assert.Matches(@"^q2a: .*nowhere: no such TLS credentials directory\n$", noDir.StdErr);
        var mode = QemuTools.Q2a("serve", "--port", "0", "--tls", "sometimes", image);
        Assert.Equal(1, mode.ExitCode);
        Assert.Matches(@"^q2a: --tls 'sometimes' is not off, optional or required\n$", mode.StdErr);
        Directory.CreateDirectory(_dir.File("unread-creds"));
        var optionalAuthz = QemuTools.Q2a("serve", "--port", "0", "--tls-creds", _dir.File("unread-creds"), "--tls", "optional", "--tls-authz", "CN=acme", image);
        Assert.Equal(1, optionalAuthz.ExitCode);
        Assert.Matches(@"^q2a: --tls-authz needs --tls required \(.*\)\n$", optionalAuthz.StdErr);
        Directory.CreateDirectory(_dir.File("creds"));
        File.WriteAllText(_dir.File("creds/ca-cert.pem"), "not a certificate");
        File.WriteAllText(_dir.File("creds/server-cert.pem"), "");
        File.WriteAllText(_dir.File("creds/server-key.pem"), "");
        var bad = QemuTools.Q2a("serve", "--port", "0", "--tls-creds", _dir.File("creds"), image);
        Assert.Equal(1, bad.ExitCode);
        Assert.Matches(@"^q2a: .*ca-cert\.pem: .+\n$", bad.StdErr);
    }
}
