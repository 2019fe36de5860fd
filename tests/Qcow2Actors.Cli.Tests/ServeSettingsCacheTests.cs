using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests;

public sealed class ServeSettingsCacheTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static ServeSettings From(string[] images, string? configFile = null, string? cache = null) =>
        ServeSettings.From(images, null, 0, null, null, false, null, null, configFile, cache: cache);

    [Fact]
    public void Cache_is_writeback_unless_asked_and_none_when_asked()
    {
        Assert.Equal(CacheMode.Writeback, From(["a.qcow2"]).Exports[0].Cache);
        Assert.Equal(CacheMode.Writeback, From(["a.qcow2"], cache: "writeback").Exports[0].Cache);
        Assert.Equal(CacheMode.None, From(["a.qcow2"], cache: "none").Exports[0].Cache);
    }

    [Fact]
    public void A_cache_mode_we_do_not_serve_is_one_error_naming_the_option()
    {
        var e = Assert.Throws<ArgumentException>(() => From(["a.qcow2"], cache: "writethrough"));
        Assert.Equal("invalid --cache 'writethrough' (none or writeback)", e.Message);
    }

    [Fact]
    public void The_config_file_sets_the_cache_for_every_export_and_an_export_overrides_it()
    {
        var config = _dir.File("serve.conf");
        File.WriteAllText(config, """
            q2a.serve {
              cache = none
              exports {
                a { path = "a.qcow2" }
                b { path = "b.qcow2", cache = writeback }
              }
            }
            """);
        var exports = From([], config).Exports.ToDictionary(e => e.Name);
        Assert.Equal(CacheMode.None, exports["a"].Cache);
        Assert.Equal(CacheMode.Writeback, exports["b"].Cache);
        // The command line wins over the file, as for every option.
        Assert.All(From([], config, cache: "writeback").Exports, e => Assert.Equal(CacheMode.Writeback, e.Cache));
        File.WriteAllText(config, "q2a.serve { cache = unsafe, exports { a { path = \"a.qcow2\" } } }");
        Assert.Equal("invalid q2a.serve.cache 'unsafe' (none or writeback)", Assert.Throws<ArgumentException>(() => From([], config)).Message);
    }
}
