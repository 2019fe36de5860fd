using Qcow2Actors.Cli.Sources;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests.Sources;

/// <summary>
/// Every spelling of an image argument resolves to the target qemu-img 7.2 opens for it, named as
/// qemu-img names it, and every bad one is the one line qemu-img prints (checked against it by hand).
/// </summary>
public sealed class ImageSpecTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static ImageSpec Resolve(string arg, bool imageOpts = false, string? format = null, SourceObjects? objects = null) =>
        ImageSpec.Resolve(arg, imageOpts, format, objects ?? SourceObjects.Empty);

    private static string Error(string arg, bool imageOpts = false, string? format = null, SourceObjects? objects = null) =>
        Assert.Throws<CliException>(() => Resolve(arg, imageOpts, format, objects)).Message;

    [Theory]
    [InlineData("disk.qcow2")]
    [InlineData("/abs/dir/disk.qcow2")]
    [InlineData("dir/with:colon")]
    [InlineData("odd:name")]
    public void A_plain_path_stays_a_host_file_named_as_given(string arg)
    {
        var spec = Resolve(arg, format: "qcow2");
        Assert.True(spec.IsHostFile);
        Assert.Equal(arg, spec.Path);
        Assert.Equal(arg, spec.DisplayName);
        Assert.Equal("qcow2", spec.Format);
    }

    [Theory]
    [InlineData("nbd://127.0.0.1:10899/exp", "127.0.0.1", 10899, "exp", "nbd://127.0.0.1:10899/exp")]
    [InlineData("nbd+tcp://127.0.0.1:10899/exp", "127.0.0.1", 10899, "exp", "nbd://127.0.0.1:10899/exp")]
    [InlineData("nbd://localhost/exp", "localhost", 10809, "exp", "nbd://localhost:10809/exp")]
    [InlineData("nbd://127.0.0.1:1", "127.0.0.1", 1, "", "nbd://127.0.0.1:1")]
    [InlineData("nbd://127.0.0.1:1/", "127.0.0.1", 1, "", "nbd://127.0.0.1:1")]
    [InlineData("nbd://[::1]:1/e", "::1", 1, "e", "nbd://::1:1/e")]
    [InlineData("nbd://h/a%20b", "h", 10809, "a b", "nbd://h:10809/a b")]
    [InlineData("nbd:127.0.0.1:10899:exportname=exp", "127.0.0.1", 10899, "exp", "nbd://127.0.0.1:10899/exp")]
    [InlineData("nbd:127.0.0.1:10899", "127.0.0.1", 10899, "", "nbd://127.0.0.1:10899")]
    public void Tcp_uris_resolve_to_host_port_and_export_with_qemus_refreshed_name(string arg, string host, int port, string export, string shown)
    {
        var spec = Resolve(arg);
        Assert.Equal((host, port, export, (string?)null), (spec.Nbd!.Host, spec.Nbd.Port, spec.Nbd.Export, spec.Nbd.Socket));
        Assert.Equal(shown, spec.DisplayName);
        Assert.Null(spec.Format);
        Assert.Equal(arg, spec.Argument);
    }

    [Theory]
    [InlineData("nbd+unix:///exp?socket=/tmp/s.sock", "/tmp/s.sock", "exp", "nbd+unix:///exp?socket=/tmp/s.sock")]
    [InlineData("nbd+unix://?socket=/tmp/s.sock", "/tmp/s.sock", "", "nbd+unix://?socket=/tmp/s.sock")]
    [InlineData("nbd+unix:///?socket=/tmp/s.sock", "/tmp/s.sock", "", "nbd+unix://?socket=/tmp/s.sock")]
    [InlineData("nbd:unix:/tmp/s.sock:exportname=exp", "/tmp/s.sock", "exp", "nbd+unix:///exp?socket=/tmp/s.sock")]
    public void Unix_uris_resolve_to_the_socket_and_export(string arg, string socket, string export, string shown)
    {
        var spec = Resolve(arg, format: "raw");
        Assert.Equal((socket, export, (string?)null), (spec.Nbd!.Socket, spec.Nbd.Export, spec.Nbd.Host));
        Assert.Equal(shown, spec.DisplayName);
        Assert.Equal("raw", spec.Format);
    }

    [Theory]
    [InlineData("nbd://127.0.0.1:99999/exp", "Could not open 'nbd://127.0.0.1:99999/exp': No valid URL specified")]
    [InlineData("nbd://127.0.0.1:abc/exp", "Could not open 'nbd://127.0.0.1:abc/exp': No valid URL specified")]
    [InlineData("nbd:///exp", "Could not open 'nbd:///exp': No valid URL specified")]
    [InlineData("nbd+unix:///exp", "Could not open 'nbd+unix:///exp': No valid URL specified")]
    [InlineData("nbd+unix:///exp?socket=/s&foo=1", "Could not open 'nbd+unix:///exp?socket=/s&foo=1': No valid URL specified")]
    [InlineData("nbd+unix://host/exp?socket=/s", "Could not open 'nbd+unix://host/exp?socket=/s': No valid URL specified")]
    [InlineData("nbd://127.0.0.1/exp?socket=x", "Could not open 'nbd://127.0.0.1/exp?socket=x': No valid URL specified")]
    [InlineData("nbds://127.0.0.1/exp", "Could not open 'nbds://127.0.0.1/exp': Unknown protocol 'nbds'")]
    [InlineData("nbd+rdma://x/e", "Could not open 'nbd+rdma://x/e': Unknown protocol 'nbd+rdma'")]
    [InlineData("http://x/e", "Could not open 'http://x/e': Unknown protocol 'http'")]
    public void Malformed_or_unknown_uris_are_qemus_one_line(string arg, string line) =>
        Assert.Equal(line, Error(arg));

    [Theory]
    [InlineData("""json:{"driver":"qcow2","file":{"driver":"file","filename":"/d/a.qcow2"}}""", "qcow2")]
    [InlineData("""json:{"driver":"qcow2","file.filename":"/d/a.qcow2"}""", "qcow2")]
    [InlineData("""json:{"file.filename":"/d/a.qcow2"}""", null)]
    [InlineData("""json:{"driver":"raw","file":{"filename":"/d/a.qcow2"}}""", "raw")]
    public void Json_file_spellings_name_the_host_file(string arg, string? format)
    {
        var spec = Resolve(arg);
        Assert.Equal("/d/a.qcow2", spec.Path);
        Assert.Equal("/d/a.qcow2", spec.DisplayName);
        Assert.Equal(format, spec.Format);
    }

    [Theory]
    [InlineData("""json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1","port":"10899"},"export":"exp"}""", "raw", "nbd")]
    [InlineData("""json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1","port":10899},"export":"exp"}""", "raw", "nbd")]
    [InlineData("""json:{"driver":"nbd","host":"127.0.0.1","port":"10899","export":"exp"}""", "raw", "nbd")]
    [InlineData("""json:{"driver":"raw","file":{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1","port":"10899"},"export":"exp"}}""", "raw", null)]
    [InlineData("""json:{"driver":"qcow2","file.driver":"nbd","file.server.type":"inet","file.server.host":"127.0.0.1","file.server.port":"10899","file.export":"exp"}""", "qcow2", null)]
    public void Json_nbd_spellings_resolve_the_server_and_whether_a_format_sits_on_top(string arg, string format, string? label)
    {
        var spec = Resolve(arg);
        Assert.Equal(("127.0.0.1", 10899, "exp"), (spec.Nbd!.Host, spec.Nbd.Port, spec.Nbd.Export));
        Assert.Equal("nbd://127.0.0.1:10899/exp", spec.DisplayName);
        Assert.Equal(format, spec.Format);
        Assert.Equal(label, spec.FormatLabel);
    }

    [Theory]
    [InlineData("driver=qcow2,file.filename=a.qcow2", "a.qcow2", "qcow2")]
    [InlineData("driver=qcow2,file.driver=file,file.filename=a,,b.qcow2", "a,b.qcow2", "qcow2")]
    [InlineData("file.filename=a.qcow2", "a.qcow2", null)]
    public void Image_opts_file_spellings_name_the_host_file(string arg, string path, string? format)
    {
        var spec = Resolve(arg, imageOpts: true);
        Assert.Equal(path, spec.Path);
        Assert.Equal(format, spec.Format);
    }

    [Fact]
    public void Image_opts_nbd_over_a_unix_socket_with_tls_takes_the_credentials_object()
    {
        string dir = _dir.File("pki");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "ca-cert.pem"), "");
        var objects = ImageSpec.Objects([$"tls-creds-x509,id=tls0,dir={dir},endpoint=client,verify-peer=on"]);
        var spec = Resolve("driver=nbd,server.type=unix,server.path=/tmp/s.sock,export=e,tls-creds=tls0,tls-hostname=localhost", imageOpts: true, objects: objects);
        Assert.Equal(("/tmp/s.sock", "e", "tls0", "localhost"), (spec.Nbd!.Socket, spec.Nbd.Export, spec.Nbd.TlsCredsId, spec.Nbd.TlsHostname));
        Assert.Equal(dir, spec.TlsDirectory);
        Assert.Equal("nbd+unix:///e?socket=/tmp/s.sock", spec.DisplayName);
        Assert.Equal("nbd", spec.FormatLabel);
    }

    [Theory]
    [InlineData("driver=foo", "Unknown driver 'foo'")]
    [InlineData("driver=qcow2,file.filename=/d/b.qcow2,bogus=1", "Block format 'qcow2' does not support the option 'bogus'")]
    [InlineData("driver=nbd,server.type=unix,server.path=/s,export=exp,bogus=1", "Block protocol 'nbd' doesn't support the option 'bogus'")]
    [InlineData("driver=qcow2,file.driver=file,file.filename=/d/b.qcow2,file.bogus=1", "Block protocol 'file' doesn't support the option 'bogus'")]
    [InlineData("driver=qcow2,file.driver=nbd,file.server.type=unix,file.server.path=/s,file.bogus=1", "Block protocol 'nbd' doesn't support the option 'bogus'")]
    [InlineData("driver=nbd,server.type=foo,server.path=x", "Parameter 'type' does not accept value 'foo'")]
    [InlineData("driver=nbd,server.type=inet,server.host=h,server.port=1,server.path=x", "Parameter 'path' is unexpected")]
    [InlineData("driver=nbd,server.type=unix,export=exp", "Parameter 'path' is missing")]
    [InlineData("driver=nbd,server.type=inet,server.host=h", "Parameter 'port' is missing")]
    [InlineData("driver=nbd,export=e", "NBD server address missing")]
    [InlineData("driver=qcow2,file.driver=foo", "Unknown driver 'foo'")]
    [InlineData("driver=qcow2,file.driver=file", "The 'file' block driver requires a file name")]
    [InlineData("driver=qcow2", "A block device must be specified for \"file\"")]
    [InlineData("driver=raw,file=x", "Cannot find device='x' nor node-name='x'")]
    [InlineData("/d/b.qcow2", "Cannot find device='/d/b.qcow2' nor node-name='/d/b.qcow2'")]
    [InlineData("driver=nbd,server.type=unix,server.path=/s,tls-creds=tls0", "No TLS credentials with id 'tls0'")]
    public void Bad_image_opts_are_qemus_line_after_could_not_open(string arg, string reason) =>
        Assert.Equal($"Could not open '{arg}': {reason}", Error(arg, imageOpts: true));

    [Theory]
    [InlineData("json:{bad", "Could not parse the JSON options: JSON parse error")]
    [InlineData("json:[]", "Invalid JSON object given")]
    [InlineData("""json:{"driver":"foo"}""", "Unknown driver 'foo'")]
    [InlineData("""json:{"driver":"raw"}""", "A block device must be specified for \"file\"")]
    [InlineData("""json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1"},"export":"e"}""", "Parameter 'port' is missing")]
    public void Bad_json_is_one_line_naming_the_problem(string arg, string reason) =>
        Assert.StartsWith($"Could not open '{arg}': {reason}", Error(arg));

    [Fact]
    public void Image_opts_with_a_format_are_refused_as_qemu_refuses_them() =>
        Assert.Equal("--image-opts and --format are mutually exclusive", Error("driver=raw,file.filename=a", imageOpts: true, format: "raw"));

    [Fact]
    public void A_secret_is_kept_and_a_non_tls_object_is_refused_as_credentials()
    {
        var objects = ImageSpec.Objects(["secret,id=s0,data=abc"]);
        Assert.Equal("abc"u8.ToArray(), Assert.IsType<SecretObject>(objects.Find("s0")).Value);
        Assert.Equal("Could not open 'driver=nbd,server.type=unix,server.path=/s,tls-creds=s0': Object with id 's0' is not TLS credentials",
            Error("driver=nbd,server.type=unix,server.path=/s,tls-creds=s0", imageOpts: true, objects: objects));
    }

    [Fact]
    public void A_secret_file_is_read_when_the_object_is_made()
    {
        string file = _dir.File("pw");
        File.WriteAllText(file, "hunter2");
        Assert.Equal("hunter2"u8.ToArray(), Assert.IsType<SecretObject>(ImageSpec.Objects([$"secret,id=s0,file={file}"]).Find("s0")).Value);
    }

    [Fact]
    public void Server_endpoint_credentials_are_refused_for_a_client()
    {
        string dir = _dir.File("pki");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "ca-cert.pem"), "");
        var objects = ImageSpec.Objects([$"tls-creds-x509,id=t0,dir={dir},endpoint=server"]);
        Assert.EndsWith("Expecting TLS credentials with a client endpoint",
            Error("driver=nbd,server.type=unix,server.path=/s,tls-creds=t0", imageOpts: true, objects: objects));
    }

    [Theory]
    [InlineData("foo,id=x", "Parameter 'qom-type' does not accept value 'foo'")]
    [InlineData("", "Parameter 'qom-type' is missing")]
    [InlineData("id=x", "Parameter 'qom-type' is missing")]
    [InlineData("secret,data=abc", "Parameter 'id' is missing")]
    [InlineData("secret,id=s0", "Either 'file' or 'data' must be provided")]
    [InlineData("secret,id=s0,file=/nonexist", "Unable to read /nonexist: Failed to open file \u201c/nonexist\u201d: No such file or directory")]
    [InlineData("secret,id=s0,data=abc,bogus=1", "Parameter 'bogus' is unexpected")]
    [InlineData("tls-creds-x509,id=t0,dir=/nonexist,endpoint=client", "Unable to access credentials /nonexist/ca-cert.pem: No such file or directory")]
    [InlineData("tls-creds-x509,id=t0,dir=/tmp,endpoint=bogus", "Parameter 'endpoint' does not accept value 'bogus'")]
    [InlineData("tls-creds-x509,id=t0,dir=/tmp,endpoint=client,verify-peer=maybe", "Parameter 'verify-peer' expects 'on' or 'off'")]
    [InlineData("tls-creds-x509,id=t0,endpoint=client", "Missing 'dir' property value")]
    [InlineData("tls-creds-x509,dir=/tmp", "Parameter 'id' is missing")]
    [InlineData("tls-creds-psk,id=t0,dir=/tmp", "Parameter 'qom-type' does not accept value 'tls-creds-psk'")]
    public void Bad_objects_are_qemus_one_line(string value, string line) =>
        Assert.Equal(line, Assert.Throws<CliException>(() => ImageSpec.Objects([value])).Message);

    [Fact]
    public void A_duplicate_object_id_is_refused_naming_it() =>
        Assert.Equal("attempt to add duplicate property 's0' to object (type 'container')",
            Assert.Throws<CliException>(() => ImageSpec.Objects(["secret,id=s0,data=a", "secret,id=s0,data=b"])).Message);
}
