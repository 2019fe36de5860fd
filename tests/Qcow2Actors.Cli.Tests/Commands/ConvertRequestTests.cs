using Microsoft.Extensions.Time.Testing;
using Qcow2Actors.Cli.Commands;
using Qcow2Actors.Engine.Device;

namespace Qcow2Actors.Cli.Tests.Commands;

/// <summary>convert's option values and combinations, refused with qemu-img's messages before anything is opened.</summary>
public sealed class ConvertRequestTests
{
    [Theory]
    [InlineData("0", 0)]
    [InlineData("512", 512)]
    [InlineData("4k", 4096)]
    [InlineData("16M", 16 * 1024 * 1024)]
    public void Sparse_sizes_are_multiples_of_512_up_to_16M_or_0(string text, long expected) =>
        Assert.Equal(expected, ConvertRequest.ParseSparseSize(text));

    [Theory]
    [InlineData("1x", "You may use k, M, G")]
    [InlineData("-1", "You may use k, M, G")]
    [InlineData("1000", "Valid sizes are multiples of 512 up to 16777216")]
    [InlineData("17M", "Valid sizes are multiples of 512 up to 16777216")]
    public void Bad_sparse_sizes_are_refused(string text, string reason)
    {
        var ex = Assert.Throws<CliException>(() => ConvertRequest.ParseSparseSize(text));
        Assert.StartsWith("Invalid buffer size for sparse output specified. ", ex.Message, StringComparison.Ordinal);
        Assert.Contains(reason, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("17")]
    [InlineData("x")]
    [InlineData("-3")]
    public void Parallel_requests_are_1_to_16(string text) =>
        Assert.Equal("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16",
            Assert.Throws<CliException>(() => ConvertRequest.ParseParallel(text)).Message);

    [Fact]
    public void Cache_modes_map_onto_the_engine_s_and_name_the_bad_one()
    {
        Assert.Equal(CacheMode.None, CacheModes.ParseOrRefuse("directsync", source: false));
        Assert.Equal(CacheMode.Writeback, CacheModes.ParseOrRefuse("unsafe", source: true));
        Assert.Equal("Invalid source cache option: x", Assert.Throws<CliException>(() => CacheModes.ParseOrRefuse("x", source: true)).Message);
        Assert.Equal("Invalid cache option: x", Assert.Throws<CliException>(() => CacheModes.ParseOrRefuse("x", source: false)).Message);
    }

    [Fact]
    public void Rate_limits_take_suffixes_and_0_means_none()
    {
        Assert.Equal(1 << 20, ConvertRequest.ParseRateLimit("1M"));
        Assert.Equal(0, ConvertRequest.ParseRateLimit("0"));
        Assert.StartsWith("Invalid rate limit specified.", Assert.Throws<CliException>(() => ConvertRequest.ParseRateLimit("-1")).Message, StringComparison.Ordinal);
    }

    private static readonly (ConvertRequest Request, string Message)[] Conflicts =
    [
        (new ConvertRequest("a", "b") { TargetIsZero = true }, "--target-is-zero requires use of -n flag"),
        (new ConvertRequest("a", "b") { CopyOffload = true, Compress = true }, "Cannot enable copy offloading when -c is used"),
        (new ConvertRequest("a", "b") { CopyOffload = true, SparseSizeGiven = true }, "Cannot enable copy offloading when -S is used"),
        (new ConvertRequest("a", "b") { CopyOffload = true, Salvage = true }, "Cannot use copy offloading in salvaging mode"),
        (new ConvertRequest("a", "b") { NoCreate = true, Options = ["cluster_size=4k"] }, "-o has no effect when skipping image creation"),
        (new ConvertRequest("a", "b") { NoCreate = true, TargetIsZero = true, BackingFile = "c" }, "Cannot use --target-is-zero when the destination image has a backing file"),
    ];

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Conflicting_options_are_refused_as_qemu_img_refuses_them(int index) =>
        Assert.Equal(Conflicts[index].Message, Assert.Throws<CliException>(Conflicts[index].Request.Validate).Message);

    [Fact]
    public void Copy_offloading_alone_and_with_a_backing_file_is_accepted()
    {
        new ConvertRequest("a", "b") { CopyOffload = true }.Validate();
        new ConvertRequest("a", "b") { CopyOffload = true, BackingFile = "c" }.Validate();
    }

    [Fact]
    public async Task A_rate_limit_lets_the_first_request_go_and_paces_the_next_ones()
    {
        var time = new FakeTimeProvider();
        var rate = new RateLimit(1000, time);
        Assert.True(rate.WaitAsync(1000, default).IsCompleted);
        var second = rate.WaitAsync(500, default);
        Assert.False(second.IsCompleted);
        time.Advance(TimeSpan.FromMilliseconds(999));
        Assert.False(second.IsCompleted);
        time.Advance(TimeSpan.FromMilliseconds(1));
        await second;
        // 1500 bytes granted at t=1s: the third is due at 1.5 s.
        var third = rate.WaitAsync(1, default);
        time.Advance(TimeSpan.FromMilliseconds(499));
        Assert.False(third.IsCompleted);
        time.Advance(TimeSpan.FromMilliseconds(1));
        await third;
        Assert.True(new RateLimit(0, time).WaitAsync(1 << 30, default).IsCompleted);
    }
}
