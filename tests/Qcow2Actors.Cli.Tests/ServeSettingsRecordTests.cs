using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests;

/// <summary>serve's --record and the config file's per-export <c>record</c>: which export records where, and what is refused.</summary>
public sealed class ServeSettingsRecordTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Record_from_the_command_line_goes_to_the_one_image()
    {
        var export = ServeSettings.From(["a.qcow2"], null, 0, null, null, false, null, null, null, record: "a.crashlog").Exports.Single();
        Assert.Equal("a.crashlog", export.Record);
        Assert.Null(ServeSettings.From(["a.qcow2"], null, 0, null, null, false, null, null, null).Exports.Single().Record);
    }

    [Fact]
    public void Record_needs_exactly_one_writable_qcow2_image_and_a_name()
    {
        string Refusal(string[] images, bool readOnly = false, string? format = null, string record = "x.crashlog") =>
            Assert.Throws<ArgumentException>(() => ServeSettings.From(images, null, 0, null, null, readOnly, null, format, null, record: record)).Message;

        Assert.Equal("--record needs exactly one image on the command line (per-export logs go in --config)", Refusal(["a.qcow2", "b.qcow2"]));
        Assert.Equal("--record cannot record 'a.qcow2': it is served read-only, so there is nothing to record", Refusal(["a.qcow2"], readOnly: true));
        Assert.Equal("--record cannot record 'a.raw': a raw image has no internal snapshot to start from (convert it to qcow2)", Refusal(["a.raw"], format: "raw"));
        Assert.Equal("--record must name a log file", Refusal(["a.qcow2"], record: ""));
    }

    [Fact]
    public void The_config_file_records_per_export_relative_to_its_directory_and_never_two_into_one_log()
    {
        var config = _dir.File("serve.conf");
        File.WriteAllText(config, """
            q2a.serve.exports {
              a { path = "a.qcow2", record = "logs/a.crashlog" }
              b { path = "b.qcow2", record = "/var/tmp/b.crashlog" }
              c { path = "c.qcow2" }
            }
            """);
        var exports = ServeSettings.From([], null, 0, null, null, false, null, null, config).Exports.ToDictionary(e => e.Name);
        Assert.Equal(Path.Combine(_dir.Path, "logs", "a.crashlog"), exports["a"].Record);
        Assert.Equal("/var/tmp/b.crashlog", exports["b"].Record);
        Assert.Null(exports["c"].Record);

        File.WriteAllText(config, """
            q2a.serve.exports {
              a { path = "a.qcow2", record = "one.crashlog" }
              b { path = "b.qcow2", record = "one.crashlog" }
            }
            """);
        var shared = Assert.Throws<ArgumentException>(() => ServeSettings.From([], null, 0, null, null, false, null, null, config));
        Assert.Equal($"two exports record into '{_dir.File("one.crashlog")}'; give each its own log", shared.Message);
    }
}
