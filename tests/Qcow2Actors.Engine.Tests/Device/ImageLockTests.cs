using Qcow2Actors.Engine.Device;
using Qcow2Actors.Tests.Shared;

namespace Qcow2Actors.Engine.Tests.Device;

/// <summary>
/// QEMU's lock byte layout, seen from a second handle with F_OFD_GETLK (<see cref="ImageLock.IsByteLocked"/>):
/// byte 100+i for each permission held, 200+i for each one not shared (bits: 0 consistent read,
/// 1 write, 2 write unchanged, 3 resize). The expected sets are what qemu-nbd and qemu-io 7.2 hold
/// (read from /proc/locks), and OFD locks of two handles conflict within one process, which is
/// what lets one process stand in for two here.
/// </summary>
public sealed class ImageLockTests : IDisposable
{
    private static readonly int[] AllBytes = [100, 101, 102, 103, 200, 201, 202, 203];
    private readonly TempDir _dir = new();
    private readonly string _file;

    public ImageLockTests()
    {
        _file = _dir.File("img");
        File.WriteAllBytes(_file, new byte[4096]);
    }

    public void Dispose() => _dir.Dispose();

    private int[] LockedBytes() => [.. AllBytes.Where(b => ImageLock.IsByteLocked(_file, b))];

    public static TheoryData<string, int[]> Layouts => new()
    {
        { nameof(LockMode.Writer), [100, 101, 103, 201, 203] },
        { nameof(LockMode.Reader), [100, 201, 203] },
        { nameof(LockMode.ForceShareReader), [100] },
        { nameof(LockMode.DataFileWriter), [100, 101, 103, 203] },
        { nameof(LockMode.DataFileReader), [100, 203] },
        { nameof(LockMode.Creator), [101, 103, 203] },
    };

    private static LockMode Mode(string name) => name switch
    {
        nameof(LockMode.Writer) => LockMode.Writer,
        nameof(LockMode.Reader) => LockMode.Reader,
        nameof(LockMode.ForceShareReader) => LockMode.ForceShareReader,
        nameof(LockMode.DataFileWriter) => LockMode.DataFileWriter,
        nameof(LockMode.DataFileReader) => LockMode.DataFileReader,
        nameof(LockMode.Creator) => LockMode.Creator,
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Each_mode_holds_exactly_the_bytes_qemu_holds_for_it(string mode, int[] expected)
    {
        Assert.Empty(LockedBytes());
        using (ImageLock.Acquire(_file, Mode(mode)))
            Assert.Equal(expected, LockedBytes());
        Assert.Empty(LockedBytes());
    }

    [Fact]
    public void A_second_writer_is_refused_naming_the_write_lock()
    {
        using var first = ImageLock.Acquire(_file, LockMode.Writer);
        var e = Assert.Throws<ImageLockException>(() => ImageLock.Acquire(_file, LockMode.Writer, "disk.qcow2"));
        Assert.Equal("Could not open 'disk.qcow2': Failed to get \"write\" lock: is another process using the image?", e.Message);
        // The refused open took nothing: the first writer's bytes are all that is held.
        Assert.Equal([100, 101, 103, 201, 203], LockedBytes());
    }

    [Fact]
    public void A_reader_is_refused_while_a_writer_holds_the_image_with_the_shared_variant()
    {
        using var writer = ImageLock.Acquire(_file, LockMode.Writer);
        var e = Assert.Throws<ImageLockException>(() => ImageLock.Acquire(_file, LockMode.Reader));
        Assert.Equal("Failed to get shared \"write\" lock", e.Failure);
    }

    [Fact]
    public void A_writer_is_refused_while_a_reader_holds_the_image()
    {
        using var reader = ImageLock.Acquire(_file, LockMode.Reader);
        var e = Assert.Throws<ImageLockException>(() => ImageLock.Acquire(_file, LockMode.Writer));
        Assert.Equal("Failed to get \"write\" lock", e.Failure);
    }

    [Fact]
    public void A_force_share_reader_and_a_writer_coexist_in_either_order()
    {
        using (ImageLock.Acquire(_file, LockMode.Writer))
        using (ImageLock.Acquire(_file, LockMode.ForceShareReader))
            Assert.Equal([100, 101, 103, 201, 203], LockedBytes());
        using (ImageLock.Acquire(_file, LockMode.ForceShareReader))
        using (ImageLock.Acquire(_file, LockMode.Writer))
            Assert.Equal([100, 101, 103, 201, 203], LockedBytes());
    }

    [Fact]
    public void Readers_share_the_image_with_each_other()
    {
        using var a = ImageLock.Acquire(_file, LockMode.Reader);
        using var b = ImageLock.Acquire(_file, LockMode.Reader);
        Assert.Null(ImageLock.Probe(_file, LockMode.Reader));
        Assert.Equal("Failed to get \"write\" lock", ImageLock.Probe(_file, LockMode.Writer));
    }

    [Fact]
    public void Create_is_refused_over_a_file_a_reader_or_writer_holds()
    {
        using (ImageLock.Acquire(_file, LockMode.Reader))
            Assert.Equal("Failed to get \"write\" lock", ImageLock.Probe(_file, LockMode.Creator));
        using (ImageLock.Acquire(_file, LockMode.Writer))
            Assert.NotNull(ImageLock.Probe(_file, LockMode.Creator));
        Assert.Null(ImageLock.Probe(_file, LockMode.Creator));
    }

    [Fact]
    public void A_released_lock_lets_the_next_writer_in()
    {
        ImageLock.Acquire(_file, LockMode.Writer).Dispose();
        using var second = ImageLock.Acquire(_file, LockMode.Writer);
        Assert.Equal([100, 101, 103, 201, 203], LockedBytes());
    }

    [Fact]
    public void A_lock_set_locks_each_file_once_and_releases_all()
    {
        var other = _dir.File("backing");
        File.WriteAllBytes(other, new byte[512]);
        using (var set = new ImageLockSet())
        {
            set.Acquire(_file, LockMode.Writer);
            // The same file again (a chain that reaches it twice) is not a conflict with itself.
            set.Acquire(Path.Combine(_dir.Path, ".", "img"), LockMode.Writer);
            set.Acquire(other, LockMode.Reader);
            Assert.True(set.Holds(_file));
            Assert.Equal([100, 201, 203], AllBytes.Where(b => ImageLock.IsByteLocked(other, b)));
        }
        Assert.Empty(LockedBytes());
        Assert.DoesNotContain(AllBytes, b => ImageLock.IsByteLocked(other, b));
    }
}
