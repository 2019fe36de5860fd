using System.Globalization;
using Qcow2Actors.Interop.Tests.Host;
using Qcow2Actors.Interop.Tests.Tls;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Interop.Tests.Sources;

/// <summary>A fact that needs qemu-nbd (and certtool for TLS) besides qemu-img and qemu-io.</summary>
public sealed class NbdSourceFactAttribute : FactAttribute
{
    public NbdSourceFactAttribute() { Skip = QemuTools.SkipReason("qemu-img", "qemu-io", "qemu-nbd", "certtool"); }
}

/// <summary>
/// Images that are not host files (issue 14 item 6): an export served by real qemu-nbd and by <c>q2a serve</c>,
/// opened by nbd:// and nbd+unix:// URIs, json:{...} and --image-opts (with --object tls-creds-x509 over TLS).
/// Each verb runs on q2a and on qemu-img/qemu-io with the same argument: the same stdout (JSON and human),
/// the same error line and exit code, the same content (qemu-img compare).
/// </summary>
public sealed class ImageSourcesInteropTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A 64 MiB qcow2 image with data at 1 MiB and 40 MiB, a zero cluster at 4 MiB, the rest unallocated.</summary>
    private string Image(string name = "a.qcow2")
    {
        string path = _dir.File(name);
        QemuTools.QemuImg("create", "-q", "-f", "qcow2", path, "64M").EnsureSuccess();
        QemuTools.QemuIo("-c", "write -P 0xab 1M 64k", "-c", "write -z 4M 64k", "-c", "write -P 0x5a 40M 192k", path).EnsureSuccess();
        return path;
    }

    private QemuNbdProcess QemuNbdUnix(string image, string format, string export, bool readOnly = true)
    {
        string socket = _dir.File($"{export}.sock");
        var args = new List<string> { "-f", format, "-x", export, "-k", socket };
        if (readOnly) args.Add("-r");
        args.Add(image);
        return QemuNbdProcess.StartWith(_dir, $"nbd+unix:///{export}?socket={socket}", [.. args]);
    }

    private static string Stderr(QemuTools.Result r, string tool) =>
        r.StdErr.Trim().StartsWith(tool + ": ", StringComparison.Ordinal) ? r.StdErr.Trim()[(tool.Length + 2)..] : r.StdErr.Trim();

    /// <summary>Runs the verb on both tools and asserts the same exit code, stdout and error line.</summary>
    private static QemuTools.Result Same(params string[] args)
    {
        var theirs = QemuTools.QemuImg(args);
        var ours = QemuTools.Q2a(args);
        Assert.True(theirs.ExitCode == ours.ExitCode, $"q2a {string.Join(' ', args)}: exit {ours.ExitCode}, qemu-img {theirs.ExitCode}\n{ours.StdErr}\n{theirs.StdErr}");
        Assert.Equal(theirs.StdOut, ours.StdOut);
        Assert.Equal(Stderr(theirs, "qemu-img"), Stderr(ours, "q2a"));
        return ours;
    }

    [NbdSourceFact]
    public void A_qemu_nbd_raw_export_reads_the_same_through_every_verb()
    {
        string image = Image();
        using var server = QemuNbdUnix(image, "qcow2", "exp");
        string uri = server.Uri;

        Same("info", uri);
        Same("info", "--output=json", uri);
        Same("map", "--output=json", uri);
        Same("map", uri);
        Assert.Equal(63, Same("check", uri).ExitCode);
        Assert.Equal(63, Same("check", "--output=json", uri).ExitCode);
        Assert.Equal(0, Same("compare", uri, image).ExitCode);
        Assert.Equal(0, Same("compare", image, uri).ExitCode);

        string copy = _dir.File("copy.qcow2");
        QemuTools.Q2a("convert", "-O", "qcow2", uri, copy).EnsureSuccess();
        QemuTools.QemuImg("compare", image, copy).EnsureSuccess();
        QemuTools.AssertCheckClean(copy);
    }

    [NbdSourceFact]
    public void The_raw_bytes_of_a_qcow2_file_over_nbd_are_probed_as_qcow2_and_checked()
    {
        string image = Image();
        using var server = QemuNbdUnix(image, "raw", "bytes");
        string uri = server.Uri;

        Same("info", uri);
        Same("info", "--output=json", uri);
        Same("map", "--output=json", uri);
        Assert.Equal(0, Same("check", "--output=json", uri).ExitCode);
        Assert.Equal(0, Same("check", uri).ExitCode);
        Assert.Equal(0, Same("compare", uri, image).ExitCode);
        // With -f raw it is the export's bytes again.
        Same("info", "-f", "raw", "--output=json", uri);
    }

    [NbdSourceFact]
    public void Json_and_image_opts_spellings_open_the_same_export_as_qemu_img_does()
    {
        string image = Image();
        using var server = QemuNbdUnix(image, "qcow2", "exp");
        string socket = _dir.File("exp.sock");

        Same("info", "--output=json", $$"""json:{"driver":"nbd","server":{"type":"unix","path":"{{socket}}"},"export":"exp"}""");
        Same("map", "--output=json", $$$"""json:{"driver":"raw","file":{"driver":"nbd","server.type":"unix","server.path":"{{{socket}}}","export":"exp"}}""");
        Same("info", "--image-opts", $"driver=nbd,server.type=unix,server.path={socket},export=exp");
        Same("map", "--output=json", "--image-opts", $"driver=raw,file.driver=nbd,file.server.type=unix,file.server.path={socket},file.export=exp");
        Same("info", "--output=json", "--image-opts", $"driver=qcow2,file.filename={image}");
        Same("info", "--output=json", $$$"""json:{"driver":"qcow2","file":{"driver":"file","filename":"{{{image}}}"}}""");
        Same("compare", "--image-opts", $"driver=raw,file.driver=nbd,file.server.type=unix,file.server.path={socket},file.export=exp",
            $"driver=qcow2,file.filename={image}");
        // What qemu-img refuses, q2a refuses with the same line.
        Same("info", "--image-opts", $"driver=nbd,server.type=unix,server.path={socket},export=exp,bogus=1");
        Same("info", "--image-opts", "driver=foo");
        Same("info", "-f", "raw", "--image-opts", $"driver=qcow2,file.filename={image}");
        Same("info", "--object", "foo,id=x", "--image-opts", $"driver=qcow2,file.filename={image}");
        Same("info", "nbds://127.0.0.1/exp");
        Same("info", "nbd://127.0.0.1:99999/exp");
    }

    [NbdSourceFact]
    public void An_unreachable_server_or_a_missing_export_is_one_line_naming_it()
    {
        int port = HostProcess.FreePort();
        Assert.Equal(1, Same("info", string.Create(CultureInfo.InvariantCulture, $"nbd://127.0.0.1:{port}/exp")).ExitCode);
        Assert.Equal(1, Same("map", $"nbd+unix:///exp?socket={_dir.File("nobody.sock")}").ExitCode);

        using var server = QemuNbdUnix(Image(), "qcow2", "exp");
        string missing = server.Uri.Replace("///exp?", "///nope?", StringComparison.Ordinal);
        var r = QemuTools.Q2a("map", missing);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("nope", Assert.Single(r.StdErr.Trim().Split('\n')), StringComparison.Ordinal);
    }

    [NbdSourceFact]
    public async Task A_q2a_serve_export_reads_the_same_through_q2a_and_qemu_img()
    {
        string image = Image();
        string socket = _dir.File("serve.sock");
        using var serve = await ServeProcess.StartAsync(1, "--socket", socket, "--export-name", "disk", "--read-only", image);
        string uri = $"nbd+unix:///disk?socket={socket}";

        Same("info", "--output=json", uri);
        Same("map", "--output=json", uri);
        Assert.Equal(63, Same("check", uri).ExitCode);
        Assert.Equal(0, Same("compare", uri, image).ExitCode);
        string copy = _dir.File("copy.raw");
        QemuTools.Q2a("convert", "-O", "raw", uri, copy).EnsureSuccess();
        QemuTools.QemuImg("compare", "-f", "raw", "-F", "qcow2", copy, image).EnsureSuccess();
        Assert.Equal(0, serve.Stop());
    }

    [NbdSourceFact]
    public void Io_writes_and_reads_an_nbd_export_like_qemu_io()
    {
        string image = Image();
        using var server = QemuNbdUnix(image, "qcow2", "rw", readOnly: false);
        string uri = server.Uri;

        QemuTools.Q2a("io", "-c", "write -P 0x77 8M 128k", "-c", "write -z 1M 64k", "-c", "flush", uri).EnsureSuccess();
        Assert.Equal(0, QemuTools.QemuIo("-c", "read -P 0x77 8M 128k", "-c", "read -P 0 1M 64k", uri).ExitCode);
        QemuTools.QemuIo("-c", "write -P 0x31 20M 4k", uri).EnsureSuccess();
        var read = QemuTools.Q2a("io", "-r", "-c", "read -P 0x31 20M 4k", uri);
        Assert.Equal(0, read.ExitCode);
        Assert.Equal(1, QemuTools.Q2a("io", "-r", "-c", "read -P 0x32 20M 4k", uri).ExitCode);
        server.Stop();
        QemuTools.AssertCheckClean(image);
    }

    [NbdSourceFact]
    public void A_tls_export_of_qemu_nbd_opens_through_object_and_image_opts()
    {
        string image = Image();
        var pki = new CertToolPki(_dir.Path);
        int port = HostProcess.FreePort();
        string p = port.ToString(CultureInfo.InvariantCulture);
        using var server = QemuNbdProcess.StartWith(_dir, $"nbd://127.0.0.1:{p}/exp",
            "--object", $"tls-creds-x509,id=tls0,dir={pki.ServerDir},endpoint=server", "--tls-creds", "tls0",
            "-b", "127.0.0.1", "-p", p, "-f", "qcow2", "-x", "exp", "-r", image);
        string obj = $"tls-creds-x509,id=tls0,dir={pki.AcmeDir},endpoint=client";
        string opts = $"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={p},export=exp,tls-creds=tls0";

        Same("info", "--output=json", "--object", obj, "--image-opts", opts);
        Same("map", "--output=json", "--object", obj, "--image-opts", opts);
        Assert.Equal(0, Same("compare", "--object", obj, "--image-opts", opts, $"driver=qcow2,file.filename={image}").ExitCode);
        // Without the credentials the server refuses: one line, exit 1.
        var plain = QemuTools.Q2a("info", server.Uri);
        Assert.Equal(1, plain.ExitCode);
        Assert.Single(plain.StdErr.Trim().Split('\n'));
    }
}
