using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Cli.Tests;

/// <summary>serve's -B / -A and their config-file keys: which export offers which NBD metadata contexts.</summary>
public sealed class ServeSettingsMetaContextTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Bitmaps_from_the_command_line_are_listed_last_given_first_as_qemu_nbd_lists_them()
    {
        var export = ServeSettings.From(["a.qcow2"], null, 0, null, null, false, null, null, null, bitmaps: ["b0", "b1", "b0"], allocationDepth: true).Exports.Single();
        Assert.Equal(["b0", "b1"], export.Bitmaps);
        Assert.True(export.AllocationDepth);
        Assert.False(ServeSettings.From(["a.qcow2"], null, 0, null, null, false, null, null, null).Exports.Single().AllocationDepth);
    }

    [Fact]
    public void A_bitmap_needs_exactly_one_image_on_the_command_line()
    {
        var e = Assert.Throws<ArgumentException>(() => ServeSettings.From(["a.qcow2", "b.qcow2"], null, 0, null, null, false, null, null, null, bitmaps: ["b0"]));
        Assert.Equal("--bitmap needs exactly one image on the command line (per-export bitmaps go in --config)", e.Message);
    }

    [Fact]
    public void The_config_file_sets_bitmaps_per_export_and_allocation_depth_per_export_or_for_all()
    {
        var config = _dir.File("serve.conf");
        File.WriteAllText(config, """
            q2a.serve {
              allocation-depth = on
              exports {
                a { path = "a.qcow2", bitmaps = [backup-1, "nightly"] }
                b { path = "b.qcow2", allocation-depth = off }
              }
            }
            """);
        var exports = ServeSettings.From([], null, 0, null, null, false, null, null, config).Exports.ToDictionary(e => e.Name);
        Assert.Equal(["backup-1", "nightly"], exports["a"].Bitmaps);
        Assert.True(exports["a"].AllocationDepth);
        Assert.Empty(exports["b"].Bitmaps!);
        Assert.False(exports["b"].AllocationDepth);
    }
}
